"""Masks from fixed weights and data, on the Keras backend of this process, written to an ``.npz``.

``KERAS_BACKEND=jax python tests/keras/backend_masks.py OUT.npz``; ``test_other_backends.py`` runs it under
tensorflow, jax and torch and checks the three files hold identical masks. The weights come from numpy (not
from the backend's initializers, which differ), so every backend starts from the same numbers.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nc_prune.keras as nk  # noqa: E402
from nc_prune import WeightPruningConfig  # noqa: E402

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


def fixed(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def data(shape, n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.normal(size=(n, 4)).astype("float32")


CASES = {
    # name: (model, input shape, pruning_type, pattern, target, scope)
    "mixed_magnitude_4x1_global": (mixed, (6, 6, 4), "magnitude", "4x1", 0.6, "global"),
    "mixed_magnitude_2in4_local": (mixed, (6, 6, 4), "magnitude", "2:4", 0.5, "local"),
    "mixed_magnitude_channelx1_local": (mixed, (6, 6, 4), "magnitude", "channelx1", 0.5, "local"),
    "mlp_snip_4x1_global": (mlp, (16,), "snip", "4x1", 0.5, "global"),
    "mlp_snip_momentum_1x1_global": (mlp, (16,), "snip_momentum", "1x1", 0.7, "global"),
}


def main(out):
    warnings.filterwarnings("ignore", message=".*does not fit pattern")  # 'dw' stays dense under 2:4, on every backend
    masks = {}
    for i, (case, (make, shape, ptype, pattern, target, scope)) in enumerate(CASES.items()):
        model = fixed(make(), seed=i)
        model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=False)  # lr 0: the weights stay as given
        cb = nk.prepare_pruning(model, WeightPruningConfig(pruning_type=ptype, pattern=pattern, target_sparsity=target,
                                                           pruning_scope=scope, start_step=0, end_step=2,
                                                           pruning_frequency=1))
        model.fit(*data(shape, 12, seed=100 + i), batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
        for name, slot in cb.optimizer.slots.items():
            masks[f"{case}/{name}"] = cb.weights[name].layout.to_canonical(np.asarray(slot.mask.numpy()))
    np.savez(out, backend=keras.backend.backend(), **masks)


if __name__ == "__main__":
    main(sys.argv[1])
