"""Regularizers added to the gradient during pruning."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from .config import parse_pattern
from .errors import ConfigError
from .parameters import Param
from .patterns.base import LayerUnits, Pattern
from .registry import register_reg


class Regularizer:
    """Base class: ``grad_term(name, weight)`` returns what is added to the gradient (canonical layout).

    ``parameters["reg_coeff"]`` (a finite number >= 0, declared for every group) weighs the term.
    """

    PARAMETERS: Dict[str, Param] = {}

    def __init__(self, config: Mapping[str, Any], pattern: Pattern) -> None:
        self.config = config
        self.pattern = pattern
        self.coeff = float(config.get("parameters", {}).get("reg_coeff", 0.0))
        reason = self.config_error(dict(config, pattern=pattern.pattern))
        if reason:
            raise ConfigError(reason)

    @classmethod
    def config_error(cls, resolved: Mapping[str, Any]) -> Optional[str]:
        """Why this regularizer cannot serve a resolved group config, or None (checked when the config is built)."""
        return None

    def grad_term(self, name: str, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@register_reg("group_lasso")
class GroupLasso(Regularizer):
    """Group lasso over the pattern's blocks: adds ``coeff · W / ‖W_block‖₂`` to the gradient.

    This is the (sub)gradient of ``coeff · Σ_blocks ‖W_block‖₂``, which drives whole blocks to zero.
    Works with block and channel patterns (``NxM``); not with ``N:M``, whose groups are not fixed.
    """

    eps = 1e-8

    @classmethod
    def config_error(cls, resolved):
        if parse_pattern(resolved["pattern"])[0] == "N:M":
            return (f"reg_type='group_lasso' needs a block pattern such as '4x1'; pattern {resolved['pattern']!r} "
                    f"(N:M) has no fixed groups. Drop reg_type or change the pattern")
        return None

    def grad_term(self, name: str, weight: np.ndarray) -> np.ndarray:
        units: LayerUnits = self.pattern.layer_units(name, weight.shape)
        w = weight.astype(np.float32, copy=False)
        norms = np.sqrt(units.reduce(w * w, "sum", None))
        spread = units.expand(norms)
        return (self.coeff * w / (spread + self.eps)).astype(weight.dtype, copy=False)
