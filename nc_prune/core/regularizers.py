"""Regularizers added to the gradient during pruning."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .errors import ConfigError
from .patterns.base import LayerUnits, Pattern
from .patterns.ninm import GroupUnits
from .registry import register_reg


class Regularizer:
    """Base class: ``grad_term(name, weight)`` returns what is added to the gradient (canonical layout)."""

    def __init__(self, config: Mapping[str, Any], pattern: Pattern) -> None:
        self.config = config
        self.pattern = pattern
        self.coeff = float(config.get("parameters", {}).get("reg_coeff", 0.0))

    def grad_term(self, name: str, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@register_reg("group_lasso")
class GroupLasso(Regularizer):
    """Group lasso over the pattern's blocks: adds ``coeff · W / ‖W_block‖₂`` to the gradient.

    This is the (sub)gradient of ``coeff · Σ_blocks ‖W_block‖₂``, which drives whole blocks to zero.
    Works with block and channel patterns (``NxM``); not with ``N:M``, whose groups are not fixed.
    """

    eps = 1e-8

    def __init__(self, config, pattern) -> None:
        super().__init__(config, pattern)
        if self.pattern.__class__.__name__ == "PatternNInM":
            raise ConfigError(
                f"reg_type='group_lasso' needs a block pattern such as '4x1'; pattern {pattern.pattern!r} "
                f"(N:M) has no fixed groups. Drop reg_type or change the pattern."
            )

    def grad_term(self, name: str, weight: np.ndarray) -> np.ndarray:
        units: LayerUnits = self.pattern.units(name, weight.shape)
        if isinstance(units, GroupUnits):  # pragma: no cover - rejected in __init__
            raise ConfigError("group_lasso does not support N:M patterns")
        w = weight.astype(np.float32, copy=False)
        norms = np.sqrt(units.reduce(w * w, "sum", None))
        spread = units.expand(norms)
        return (self.coeff * w / (spread + self.eps)).astype(weight.dtype, copy=False)
