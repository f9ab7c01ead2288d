"""Small models and helpers for the Keras backend tests (TensorFlow backend, in-process)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from nc_prune import WeightPruningConfig  # noqa: E402
from nc_prune.keras import prepare_pruning  # noqa: E402

L = keras.layers


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)
    yield


def compiled(model, optimizer=None, loss="mse"):
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05), loss=loss, jit_compile=False)
    return model


def mlp(width=32, n_in=16, n_out=4):
    return keras.Sequential([keras.Input((n_in,)), L.Dense(width, activation="relu", name="fc1"),
                             L.Dense(width, activation="relu", name="fc2"), L.Dense(n_out, name="head")],
                            name="mlp")


def mixed_model():
    """Conv2D, DepthwiseConv2D, Dense and MultiHeadAttention in one Functional model."""
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.Reshape((36, 16))(x)
    x = L.Dense(16, name="proj")(x)
    x = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(x, x)
    x = L.GlobalAveragePooling1D()(x)
    out = L.Dense(4, name="head")(x)
    return keras.Model(inp, out, name="mixed")


def data(shape, n_out=4, n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + tuple(shape)).astype("float32"), rng.normal(size=(n, n_out)).astype("float32")


def fit(model, cb, x, y, epochs=1, batch_size=8):
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb])


def canonical(cb, name):
    cb._sync()  # on JAX, inside model.fit the variables are current only after a sync (a no-op elsewhere)
    w = cb.weights[name]
    return w.layout.to_canonical(np.asarray(w.variable.numpy()))


def canonical_mask(cb, name):
    cb._sync()
    w = cb.weights[name]
    return w.layout.to_canonical(np.asarray(w.slot.mask.numpy()))


def zero_blocks(a2d, bh, bw):
    """Number of all-zero bh x bw blocks of a 2-D array; fails if a block is partly zero."""
    r, c = a2d.shape
    blocks = (a2d.reshape(r // bh, bh, c // bw, bw) == 0).sum(axis=(1, 3))
    assert set(np.unique(blocks)) <= {0, bh * bw}, f"partly pruned {bh}x{bw} blocks: {np.unique(blocks)}"
    return int((blocks == bh * bw).sum())


def as_2d(a):
    return a.reshape(a.shape[0], -1) if a.ndim == 2 else np.moveaxis(a, 1, -1).reshape(a.shape[0], -1)


def config(**kw):
    kw.setdefault("pruning_type", "magnitude")
    return WeightPruningConfig(**kw)


__all__ = ["keras", "L", "compiled", "mlp", "mixed_model", "data", "fit", "canonical", "canonical_mask",
           "zero_blocks", "as_2d", "config", "prepare_pruning"]
