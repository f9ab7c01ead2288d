"""Model factories that tests pass to ``nc-prune validate --model tests.cli.models:NAME``."""

from __future__ import annotations


def torch_mlp():
    from torch import nn
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def keras_cnn():
    import keras
    L = keras.layers
    return keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3, name="conv"), L.Flatten(),
                             L.Dense(16, name="fc"), L.Dense(2, name="head")], name="kcnn")


def broken():
    raise RuntimeError("no weights file")


NOT_A_MODEL = 42
