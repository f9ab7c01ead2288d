"""The pruning callback under ``tf.distribute.MirroredStrategy``: two logical CPU devices (set before TensorFlow
initializes, so in a fresh process — this file run as a script), the same global batches as a single-device run.
Masks equal the single-device masks exactly, on both replicas (their per-replica values read one by one); scores,
taken from all-reduced gradients, are the same on both replicas; the step counter equals ``iterations``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    # name: (pruning_type, pattern, target, extra config)
    "magnitude_4x1": ("magnitude", "4x1", 0.75, {}),
    "snip_momentum_4x1": ("snip_momentum", "4x1", 0.75, {}),
    "snip_momentum_2in4": ("snip_momentum", "2:4", 0.5, {}),
    "magnitude_4x1_group_lasso": ("magnitude", "4x1", 0.5, {"reg_type": "group_lasso",
                                                           "parameters": {"reg_coeff": 0.01}}),
}


def _main(out: str) -> None:  # pragma: no cover - runs in the subprocess
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import keras

    from nc_prune import WeightPruningConfig
    from nc_prune.keras import prepare_pruning

    def run(strategy, pruning_type, pattern, target, extra):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="fc1"),
                                      keras.layers.Dense(32, activation="relu", name="fc2"),
                                      keras.layers.Dense(4, name="head")])
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse", jit_compile=False)
            cb = prepare_pruning(model, WeightPruningConfig(pruning_type=pruning_type, pattern=pattern,
                                                            target_sparsity=target, start_step=1, end_step=10,
                                                            pruning_frequency=3, **extra))
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(96, 16)).astype("float32"), rng.normal(size=(96, 4)).astype("float32")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])  # 12 global batches

        def local(variable):
            return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]

        got = {"step": [int(v) for v in local(cb.optimizer._held.step)],
               "iterations": int(model.optimizer.iterations.numpy()), "masks": {}, "scores_equal": True,
               "zeros": {}}
        for name, slot in cb.optimizer.slots.items():
            got["masks"][name] = [m.astype(int).tolist() for m in local(slot.mask)]
            w = local(slot.variable)
            got["zeros"][name] = [int((v == 0).sum()) for v in w]
            if slot.score is not None:
                s = local(slot.score)
                got["scores_equal"] &= all(np.array_equal(s[0], other) for other in s[1:])
        return got

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": mirrored.num_replicas_in_sync}
    with mirrored.scope():  # several steps per execution are refused under the strategy, with the fix
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc"), keras.layers.Dense(2)])
        model.compile("sgd", "mse", steps_per_execution=2, jit_compile=False)
        cb = prepare_pruning(model, WeightPruningConfig(pattern="4x1", target_sparsity=0.5))
    try:
        model.fit(np.ones((8, 16), "float32"), np.ones((8, 2), "float32"), verbose=0, callbacks=[cb])
        result["refused"] = ""
    except Exception as exc:  # noqa: BLE001 - the message is checked by the test
        result["refused"] = f"{type(exc).__name__}: {exc}"
    for case, args in CASES.items():
        result[case] = {"single": run(tf.distribute.get_strategy(), *args), "mirrored": run(mirrored, *args)}
    Path(out).write_text(json.dumps(result))


def test_mirrored_strategy_masks_equal_the_single_device_run_on_both_replicas(tmp_path):
    import pytest

    pytest.importorskip("tensorflow")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "distribute.json"
    run = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(out.read_text())
    assert got["replicas"] == 2
    assert got["refused"].startswith("PruningStateError: model.compile(steps_per_execution=2) under a tf.distribute "
                                     "strategy with 2 replicas"), got["refused"]
    assert got["refused"].endswith("compile with steps_per_execution=1 under the strategy")
    pruned = {"magnitude_4x1": 4 * 288, "snip_momentum_4x1": 4 * 288, "snip_momentum_2in4": 768,
              "magnitude_4x1_group_lasso": 768}  # of 16*32 + 32*32 = 1536 weights (4x1: 384 blocks)
    for case, want in pruned.items():
        single, mirrored = got[case]["single"], got[case]["mirrored"]
        assert single["step"] == [12] and mirrored["step"] == [12, 12], case
        assert single["iterations"] == mirrored["iterations"] == 12, case
        assert mirrored["scores_equal"], case
        total = 0
        for name, (mask,) in single["masks"].items():
            first, second = mirrored["masks"][name]
            assert first == mask and second == mask, (case, name)
            zeros = sum(row.count(0) for row in mask)
            total += zeros
            # the weights are zero where masked, on both replicas (a weight may also be zero by itself: >=)
            assert all(z >= zeros for z in mirrored["zeros"][name]), (case, name)
        assert total == want, case


if __name__ == "__main__":
    _main(sys.argv[1])
