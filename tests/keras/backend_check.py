"""Checks run under another Keras backend in a subprocess (the backend is fixed when keras is imported).

``KERAS_BACKEND=torch python tests/keras/backend_check.py OUT_DIR`` prints one JSON line of results; the
test in ``test_other_backends.py`` asserts on them. Nothing here is TensorFlow-specific.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nc_prune.keras as nk  # noqa: E402
from nc_prune import WeightPruningConfig, compute_masks  # noqa: E402

L = keras.layers


def mlp():
    return keras.Sequential([keras.Input((16,)), L.Dense(32, activation="relu", name="fc1"),
                             L.Dense(32, activation="relu", name="fc2"), L.Dense(4, name="head")])


def mixed():
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.Dense(16, name="proj")(L.Reshape((36, 16))(x))
    x = L.MultiHeadAttention(2, 8, name="mha")(x, x)
    return keras.Model(inp, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(x)))


def data(shape, n):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.normal(size=(n, 4)).astype("float32")


def canon(cb, name, value):
    return cb.weights[name].layout.to_canonical(np.asarray(value))


def one_shot_matches_core():
    model = mixed()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    cb = nk.prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.6,
                                                       start_step=0, end_step=0))
    before = {n: canon(cb, n, w.variable.numpy()) for n, w in cb.weights.items()}
    model.fit(*data((6, 6, 4), 8), batch_size=4, epochs=1, verbose=0, callbacks=[cb])
    want = compute_masks({n: np.abs(w) for n, w in before.items()}, "4x1", 0.6)
    return sorted(cb.weights), all(np.array_equal(canon(cb, n, s.mask.numpy()), want[n])
                                   for n, s in cb.optimizer.slots.items())


def snip_scores_match_autograd():
    import torch
    model = mlp()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    cb = nk.prepare_pruning(model, WeightPruningConfig(pruning_type="snip", pattern="4x1", target_sparsity=0.5,
                                                       start_step=0, end_step=0))
    x, y = data((16,), 8)
    kernels = [model.get_layer(n).kernel for n in ("fc1", "fc2")]
    loss = torch.nn.functional.mse_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
    grads = torch.autograd.grad(loss, [k.value for k in kernels])
    want = {n: np.abs(k.numpy() * g.numpy()) for n, k, g in zip(("fc1", "fc2"), kernels, grads)}
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    scores_ok = all(np.allclose(cb.optimizer.slots[n].score.numpy(), want[n], rtol=1e-5, atol=1e-9) for n in want)
    masks = compute_masks({n: canon(cb, n, v) for n, v in want.items()}, "4x1", 0.5)
    masks_ok = all(np.array_equal(canon(cb, n, cb.optimizer.slots[n].mask.numpy()), masks[n]) for n in want)
    return scores_ok, masks_ok


def n_in_m_resume_and_strip(out_dir):
    x, y = data((16,), 64)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="2:4", target_sparsity=0.5, start_step=0,
                              end_step=12, pruning_frequency=3)
    model = mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    cb = nk.prepare_pruning(model, cfg)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])  # 8 steps
    path = os.path.join(out_dir, "mid.keras")
    model.save(path)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    want = model.get_weights()
    loaded = keras.models.load_model(path)
    cb2 = nk.prepare_pruning(loaded)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb2])
    resumed = all(np.array_equal(a, b) for a, b in zip(want, loaded.get_weights()))
    groups = sorted({int(c) for n in ("fc1", "fc2")
                     for c in (canon(cb2, n, loaded.get_layer(n).kernel.numpy()) == 0).reshape(-1, 4).sum(1)})
    nk.strip(loaded)
    return cb2.global_step, resumed, groups, type(loaded.optimizer).__name__


def main(out_dir):
    names, one_shot = one_shot_matches_core()
    scores_ok, masks_ok = snip_scores_match_autograd()
    step, resumed, groups, stripped = n_in_m_resume_and_strip(out_dir)
    print(json.dumps({"backend": keras.backend.backend(), "names": names, "one_shot_equals_core": one_shot,
                      "snip_scores": scores_ok, "snip_masks": masks_ok, "resume_step": step, "resumed": resumed,
                      "nm_zeros_per_group": groups, "stripped_optimizer": stripped}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
