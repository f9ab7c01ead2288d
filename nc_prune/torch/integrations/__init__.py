"""Pruning inside the training frameworks people already use: Hugging Face ``Trainer`` and Lightning.

* :class:`HFPruningCallback` — a ``transformers.TrainerCallback``:
  ``Trainer(..., callbacks=[HFPruningCallback(config)])``.
* :class:`LightningPruningCallback` — a ``lightning.pytorch.Callback`` (or ``pytorch_lightning``'s):
  ``L.Trainer(..., callbacks=[LightningPruningCallback(config)])``.

Both hand the model and the framework's optimizer to :func:`~nc_prune.torch.prepare_pruning`, so pruning
follows the optimizer's steps exactly as it does in a hand-written loop, and its state (masks, scores, the
step counter) lives in the model's ``state_dict`` — which is what both frameworks save in a checkpoint.

Importing this package imports neither framework: each class imports its framework on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HFPruningCallback", "LightningPruningCallback"]


def __getattr__(name: str) -> Any:
    if name == "HFPruningCallback":
        from ._hf import HFPruningCallback
        return HFPruningCallback
    if name == "LightningPruningCallback":
        from ._lightning import LightningPruningCallback
        return LightningPruningCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
