"""INC's training entry point, ``prepare_compression``, for pruning: INC training scripts run with the import changed.

::

    from nc_prune.torch import prepare_compression   # was: from neural_compressor.training import prepare_compression

    manager = prepare_compression(model, config)
    manager.callbacks.on_train_begin()
    for epoch in range(epochs):
        manager.callbacks.on_epoch_begin(epoch)
        for step, batch in enumerate(loader):
            manager.callbacks.on_step_begin(step)
            loss = manager.callbacks.on_after_compute_loss(batch, out := model(batch), loss_fn(out))
            loss.backward()
            manager.callbacks.on_before_optimizer_step()
            optimizer.step()
            manager.callbacks.on_after_optimizer_step()
            manager.callbacks.on_step_end()
        manager.callbacks.on_epoch_end()
    manager.callbacks.on_train_end()
    manager.callbacks.on_before_eval(); evaluate(model); manager.callbacks.on_after_eval()

``manager.callbacks`` is the :class:`~nc_prune.torch.pruning.TorchPruning` in manual mode (no optimizer
hooks), so every INC callback is there; ``manager.model`` is the model itself (INC handed out a wrapper
around it). Only pruning configs are taken: nc_prune does not quantize or distil.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import torch
from torch import nn

from ..core.config import WeightPruningConfig
from ..core.errors import ConfigTypeError
from .pruning import TorchPruning


class CompressionManager:
    """What ``prepare_compression`` returns: the model, its callbacks and ``save``.

    Attributes:
        model: the model being pruned.
        callbacks: the pruning object; call INC's callbacks on it.
        pruning: the same object, under nc_prune's name.
    """

    def __init__(self, model: nn.Module, config: WeightPruningConfig) -> None:
        self.pruning = TorchPruning(model, config)
        self.callbacks = self.pruning
        self.model = model
        self.conf = config

    def save(self, root: str) -> str:
        """Write ``model.state_dict()`` (masks and step included) to ``root/best_model.pt``, as INC did; the path."""
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, "best_model.pt")
        torch.save(self.model.state_dict(), path)
        return path


def prepare_compression(model: nn.Module, confs: Union[WeightPruningConfig, Sequence[Any]],
                        **kwargs: Any) -> CompressionManager:
    """INC's ``prepare_compression(model, confs)`` for a :class:`WeightPruningConfig` (or a list holding one).

    Raises:
        ConfigTypeError: ``confs`` holds something other than one pruning config (quantization or
            distillation configs are INC features nc_prune does not have), or an unknown keyword.
    """
    if kwargs:
        raise ConfigTypeError(f"prepare_compression takes (model, confs); got the extra arguments {sorted(kwargs)}")
    items = list(confs) if isinstance(confs, (list, tuple)) else [confs]
    pruning = [c for c in items if isinstance(c, WeightPruningConfig)]
    others = [type(c).__name__ for c in items if not isinstance(c, WeightPruningConfig)]
    if len(pruning) != 1 or others:
        raise ConfigTypeError(
            f"prepare_compression needs exactly one WeightPruningConfig, got {len(pruning)}"
            + (f" and {', '.join(others)}" if others else "")
            + "; nc_prune prunes only — quantize or distil with another tool"
        )
    return CompressionManager(model, pruning[0])
