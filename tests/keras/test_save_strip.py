"""model.save mid-pruning → keras.models.load_model → resume, bit for bit; strip → a plain Keras model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nc_prune.keras as nk
from nc_prune.core.errors import PruningStateError

from .conftest import compiled, config, data, fit, keras, mixed_model, mlp, prepare_pruning

ROOT = Path(__file__).resolve().parents[2]


def _masks(model_or_opt):
    opt = model_or_opt.optimizer if isinstance(model_or_opt, keras.Model) else model_or_opt
    return {n: s.mask.numpy() for n, s in opt.slots.items()}


def _run(code: str, *args: str, env_extra=None) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("pruning_type", ["snip_momentum", "magnitude"])
def test_resume_after_load_model_is_bit_identical_to_uninterrupted_training(tmp_path, pruning_type):
    cfg = config(pruning_type=pruning_type, pattern="4x1", target_sparsity=0.75, start_step=2, end_step=20,
                 pruning_frequency=3)
    x, y = data((16,), n=64)
    model = compiled(mlp(), keras.optimizers.SGD(0.05, momentum=0.9))
    cb = prepare_pruning(model, cfg)
    fit(model, cb, x, y)  # 8 steps: mid-schedule
    path = tmp_path / "mid.keras"
    model.save(path)
    saved_masks, saved_step = _masks(model), cb.global_step
    fit(model, cb, x, y, epochs=2)
    want = model.get_weights()

    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, nk.PruningOptimizer) and loaded.optimizer.prune_step == saved_step == 8
    for n, m in _masks(loaded).items():
        np.testing.assert_array_equal(m, saved_masks[n])
    cb2 = prepare_pruning(loaded)  # the config saved with the model
    assert cb2.session.config == cfg and cb2.global_step == 8
    fit(loaded, cb2, x, y, epochs=2)
    for a, b in zip(want, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert cb2.report().total_zeros == 4 * 288  # floor(0.75 * 384) blocks


def test_a_fresh_process_restores_masks_scores_and_step(tmp_path):
    model = compiled(mixed_model(), keras.optimizers.Adam(0.01))
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.6,
                                       start_step=0, end_step=10, pruning_frequency=2))
    fit(model, cb, *data((6, 6, 4), n=24), batch_size=4)  # 6 steps
    path = tmp_path / "mid.keras"
    model.save(path)
    np.savez(tmp_path / "want.npz", **{f"{n}|mask": s.mask.numpy() for n, s in cb.optimizer.slots.items()},
             **{f"{n}|score": s.score.numpy() for n, s in cb.optimizer.slots.items()})
    code = (
        "import sys, json, numpy as np, keras, nc_prune.keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "want = np.load(sys.argv[2])\n"
        "opt = m.optimizer\n"
        "ok = all(np.array_equal(s.mask.numpy(), want[n + '|mask']) and np.array_equal(s.score.numpy(), "
        "want[n + '|score']) for n, s in opt.slots.items())\n"
        "print(json.dumps({'type': type(opt).__name__, 'step': opt.prune_step, 'ok': bool(ok), "
        "'n': len(opt.slots)}))\n"
    )
    got = json.loads(_run(code, str(path), str(tmp_path / "want.npz")).strip().splitlines()[-1])
    assert got == {"type": "PruningOptimizer", "step": 6, "ok": True, "n": 7}


def test_a_loaded_model_keeps_its_zeros_even_before_a_callback_is_attached(tmp_path):
    model = compiled(mlp(), keras.optimizers.Adam(0.05))
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=0, end_step=0))
    fit(model, cb, *data((16,), n=8))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    before = {n: loaded.get_layer(n).kernel.numpy() for n in ("fc1", "fc2")}
    loaded.fit(*data((16,), n=32), batch_size=4, epochs=1, verbose=0)
    for n, w in before.items():
        after = loaded.get_layer(n).kernel.numpy()
        np.testing.assert_array_equal(after == 0, w == 0)
        assert not np.array_equal(after, w)


def test_resuming_with_a_different_selection_is_refused(tmp_path):
    model = compiled(mlp())
    prepare_pruning(model, config(pattern="4x1", target_sparsity=0.5))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    with pytest.raises(PruningStateError, match=r"layer 'fc1': saved with pattern '4x1'.*not pruned by this config"):
        prepare_pruning(loaded, config(pattern="4x1", target_sparsity=0.5, op_names=["fc2"]))
    # a new schedule for the same layers is fine (e.g. a later end_step), and so is a higher target
    with pytest.raises(PruningStateError, match=r"saved with pattern '4x1', target 0.5.*now pattern '4x1', target 0.4"):
        prepare_pruning(loaded, config(pattern="4x1", target_sparsity=0.4))
    cb = prepare_pruning(loaded, config(pattern="4x1", target_sparsity=0.7, end_step=50))
    assert loaded.optimizer.pruning_config["target_sparsity"] == 0.7 and cb.session.pruners[0].end_step == 50


def test_strip_gives_a_plain_model_that_saves_loads_and_exports_without_nc_prune(tmp_path):
    model = mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"], jit_compile=False)
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="2:4", target_sparsity=0.5,
                                       start_step=0, end_step=4, pruning_frequency=2))
    fit(model, cb, *data((16,), n=32), batch_size=4)
    stripped = nk.strip(model)
    assert stripped is model and isinstance(model.optimizer, keras.optimizers.Adam)  # on torch: its torch_adam subclass
    assert int(model.optimizer.iterations.numpy()) == 8  # the inner optimizer's state was kept
    assert "mae" in json.dumps(model.get_compile_config()["metrics"])  # loss and metrics survive both recompiles
    rep = nk.sparsity_report(model)
    assert rep["fc1"].zeros == rep["fc1"].params // 2 and rep["fc2"].zeros == rep["fc2"].params // 2
    path = tmp_path / "plain.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        cfg_text = z.read("config.json").decode()
    assert "nc_prune" not in cfg_text and "PruningOptimizer" not in cfg_text
    x = data((16,), n=4)[0]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x)))
    code = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "assert 'nc_prune' not in sys.modules\n"
        "x, y = np.load(sys.argv[2]), np.load(sys.argv[3])\n"
        "np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x)), y, rtol=1e-6)\n"
        "g = (m.get_layer('fc2').kernel.numpy() == 0).T.reshape(-1, 4).sum(1)\n"
        "assert set(g.tolist()) == {2}, g\n"
        # Keras's SavedModel export on the torch backend needs torch_xla (not installed): a Keras limit, not ours
        "if keras.backend.backend() != 'torch':\n"
        "    m.export(sys.argv[4], verbose=False)\n"
        "    import tensorflow as tf\n"
        "    exported = tf.saved_model.load(sys.argv[4])\n"
        "    served = exported.serve(x).numpy()\n"
        "    np.testing.assert_allclose(served, y, rtol=1e-5, atol=1e-6)\n"
        "print('ok')\n"
    )
    assert _run(code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "export"),
                env_extra={"PYTHONPATH": ""}).strip().endswith("ok")


def test_strip_detaches_the_callback_and_is_idempotent():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.5, start_step=0, end_step=0))
    fit(model, cb, *data((16,), n=8))
    nk.strip(model)
    assert nk.strip(model) is model
    with pytest.raises(PruningStateError, match="detached by strip"):
        fit(model, cb, *data((16,), n=8))


def test_preparing_again_makes_the_older_callback_stale():
    model = compiled(mlp())
    old = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.5))
    new = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.5))
    assert model.optimizer is new.optimizer is old.optimizer  # the state is adopted, not rebuilt
    with pytest.raises(PruningStateError, match="detached"):
        fit(model, old, *data((16,), n=8))
    fit(model, new, *data((16,), n=8))


def test_mixed_precision_keeps_loss_scaling_outermost_through_save_load_and_strip(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = compiled(mlp(), keras.optimizers.Adam(0.01))
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                       start_step=0, end_step=4, pruning_frequency=2))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is cb.optimizer
    fit(model, cb, *data((16,), n=48), batch_size=4)
    assert cb.report().total_zeros == 4 * 192  # half of the 384 blocks of fc1 and fc2
    assert float(model.optimizer.dynamic_scale.numpy()) > 1  # the loss really was scaled
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer.inner_optimizer, nk.PruningOptimizer)
    assert loaded.optimizer.inner_optimizer.prune_step == 12
    nk.strip(loaded)
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
