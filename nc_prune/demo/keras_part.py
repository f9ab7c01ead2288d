"""The demo in Keras 3: the same CNN (same layer names), trained with ``model.fit`` and pruned by a callback."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..core.config import WeightPruningConfig
from ..core.report import SparsityReport
from .data import Digits


def _keras():
    """``(keras, nc_prune.keras)``; :class:`FrameworkUnavailable` with the reason when either is missing."""
    from .runner import FrameworkUnavailable
    try:
        import keras
    except ImportError as exc:
        raise FrameworkUnavailable(f"Keras is not installed ({exc}); pip install tensorflow-cpu keras") from None
    try:
        backend = importlib.import_module("nc_prune.keras")
    except ImportError as exc:
        raise FrameworkUnavailable(f"the nc_prune Keras backend cannot be imported ({exc})") from None
    needed = ("prepare_pruning", "strip", "sparsity_report", "find_prunable_weights")
    missing = [n for n in needed if not hasattr(backend, n)]
    if missing:
        raise FrameworkUnavailable(f"nc_prune.keras lacks {', '.join(missing)}")
    return keras, backend


def build_model(seed: int = 0) -> Any:
    """The digits CNN in Keras, with the layer names of :class:`~nc_prune.demo.torch_part.DigitsCNN`."""
    keras, _ = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Dense(64, activation="relu", name="fc1")(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(10, name="fc2")(x), name="digits_cnn")


class KerasDemo:
    """The Keras half of the demo, on images ``(N, 8, 8, 1)``."""

    name = "keras"
    checkpoint_suffix = ".keras"

    def __init__(self, data: Digits, batch_size: int, seed: int = 0) -> None:
        self.keras, self.backend = _keras()
        self.data = data
        self.batch_size = batch_size
        self.seed = seed

    def build(self) -> Any:
        return build_model(self.seed)

    def fit(self, model: Any, epochs: int, lr: float, config: Optional[WeightPruningConfig] = None,
            on_step: Optional[Callable[[Any], None]] = None) -> Any:
        """Train a copy of ``model`` with ``model.fit`` (Adam), pruned as ``config`` says when given."""
        keras = self.keras
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        copy.compile(optimizer=keras.optimizers.Adam(lr),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callbacks = [] if config is None else [self.backend.prepare_pruning(copy, config)]
        if on_step is not None:
            callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: on_step(copy)))
        keras.utils.set_random_seed(self.seed + 1)
        copy.fit(self.data.x_train, self.data.y_train, batch_size=self.batch_size, epochs=epochs, shuffle=True,
                 verbose=0, callbacks=callbacks)
        return copy

    def accuracy(self, model: Any) -> float:
        logits = self.keras.ops.convert_to_numpy(model(self.data.x_test, training=False))
        return float(np.mean(logits.argmax(axis=1) == self.data.y_test))

    def report(self, model: Any) -> SparsityReport:
        return self.backend.sparsity_report(model)

    def weights(self, model: Any) -> Dict[str, np.ndarray]:
        """Every prunable kernel in the canonical layout ``(out, in, *kernel)``, as numpy."""
        convert = self.keras.ops.convert_to_numpy
        return {w.name: w.layout.to_canonical(convert(w.variable)) for w in self.backend.find_prunable_weights(model)}

    def finish(self, model: Any) -> Any:
        return self.backend.strip(model)

    def save(self, model: Any, path: str) -> None:
        model.save(path)

