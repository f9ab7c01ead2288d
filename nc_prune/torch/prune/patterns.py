"""Pattern methods in the ``torch.nn.utils.prune`` style, computed by the nc_prune engine.

``pattern`` is any engine pattern: ``"4x1"`` (blocks of 4 output rows x 1 input column of the canonical
2-D view), ``"1xchannel"`` (whole output channels / conv filters), ``"channelx1"`` (whole input channels),
``"1x1"`` (single weights) or ``"N:M"`` (N of every M consecutive input weights pruned — ``"2:4"`` keeps 2
of every 4). The canonical layout is how torch stores Linear and Conv weights: ``(out, in, *kernel)``.

``amount`` counts *units* — blocks, channels or N:M groups — like the built-in methods count entries or
channels: an int is a number of units, a float a fraction of the units still unpruned. A block's score is
the mean (or sum / max) of ``|importance_scores|`` over it; the lowest go first. Earlier pruning is kept:
units already fully pruned stay pruned and do not count as unpruned.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ...core.config import REDUCE_TYPES, _choice, parse_pattern
from ...core.errors import ConfigError, PatternShapeError
from ...core.masks import compute_masks
from ...core.patterns.base import LayerUnits, Pattern, get_pattern
from .._adapter import tensor_to_numpy
from .base import Amount, BasePruningMethod, _check_target, units_to_prune, validate_amount, validate_amount_init

_LABEL = "tensor"


def engine_pattern(pattern: str, criterion_reduce_type: str, scope: str = "local",
                   max_ratio: float = 1.0, min_ratio: float = 0.0) -> Pattern:
    """The engine's pattern object for a pattern string (validates the string). Amounts here count units, as
    ``torch.nn.utils.prune`` counts channels, so a global target is a fraction of the units."""
    _choice("criterion_reduce_type", criterion_reduce_type, None, REDUCE_TYPES)
    parse_pattern(pattern)
    return get_pattern({"pattern": pattern, "pruning_scope": scope, "criterion_reduce_type": criterion_reduce_type,
                        "max_sparsity_ratio_per_op": max_ratio, "min_sparsity_ratio_per_op": min_ratio,
                        "global_target": "units"})


def fitting_units(pat: Pattern, label: str, shape: Tuple[int, ...]) -> LayerUnits:
    """The engine's units of a tensor of ``shape``, or a :class:`PatternShapeError` naming ``label`` and the fix."""
    shape = tuple(int(v) for v in shape)
    if 0 in shape:
        raise PatternShapeError(f"{label} has shape {shape}, with no weights in it, so pattern {pat.pattern!r} has "
                                f"nothing to prune there; leave it out of pruning (a zero-size tensor needs none)")
    return pat.layer_units(label, shape)


def unit_target(units: Dict[str, LayerUnits], pre: Dict[str, torch.Tensor], amount: Amount,
                pattern: str) -> float:
    """The engine's target sparsity that prunes ``amount`` more units on top of those already pruned."""
    total = sum(lu.n_units for lu in units.values())
    already = sum(int(lu.already_pruned(tensor_to_numpy(pre[n])).sum()) for n, lu in units.items() if n in pre)
    alive = total - already
    count = units_to_prune(amount, alive)
    validate_amount(count, alive, f"unpruned {pattern!r} units")
    scale = next(iter(units.values())).ratio_scale
    return min(1.0, (already + count) / (total * scale))


class PatternStructured(BasePruningMethod):
    """Prunes ``amount`` units of an engine pattern (blocks, channels or N:M groups) by ``|t|``.

    Args:
        amount: units to prune — an int count, or a fraction of the units still unpruned.
        pattern: ``"4x1"``, ``"1xchannel"``, ``"channelx1"``, ``"2:4"``, ...
        criterion_reduce_type: how a unit's scores become one: ``"mean"``, ``"sum"`` or ``"max"``.
    """

    PRUNING_TYPE = "global"  # it sees the whole tensor and keeps the earlier mask itself

    def __init__(self, amount: Amount, pattern: str = "4x1", criterion_reduce_type: str = "mean") -> None:
        validate_amount_init(amount)
        self.amount = amount
        self.pattern = pattern
        self.criterion_reduce_type = criterion_reduce_type
        engine_pattern(pattern, criterion_reduce_type)

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        pat = engine_pattern(self.pattern, self.criterion_reduce_type)
        pre = {_LABEL: default_mask != 0}
        label = "the tensor" if self._tensor_name is None else f"the tensor {self._tensor_name!r}"
        target = unit_target({_LABEL: fitting_units(pat, label, tuple(t.shape))}, pre, self.amount, self.pattern)
        keep = compute_masks({_LABEL: torch.abs(t.detach())}, pat, target, scope="local",
                             max_sparsity_ratio_per_op=1.0, pre_masks=pre)[_LABEL]
        return default_mask * keep.to(dtype=default_mask.dtype, device=default_mask.device)

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount, pattern: str = "4x1",  # type: ignore[override]
              criterion_reduce_type: str = "mean",
              importance_scores: Optional[torch.Tensor] = None) -> "PatternStructured":
        current = _check_target(module, name, f"{cls.__name__}.apply")
        if isinstance(current, torch.Tensor):  # anything else is refused by BasePruningMethod.apply, with the reason
            fitting_units(engine_pattern(pattern, criterion_reduce_type), f"{type(module).__name__}.{name}",
                          tuple(current.shape))
        return super().apply(module, name, amount=amount, pattern=pattern,
                             criterion_reduce_type=criterion_reduce_type, importance_scores=importance_scores)


def _require_kind(pattern: str, kind: str, func: str, example: str) -> None:
    got, _ = parse_pattern(pattern)
    if got != kind:
        raise ConfigError(f"{func}() takes a {kind} pattern such as {example!r}, got {pattern!r}; "
                          f"use pattern_structured() for any pattern")


def pattern_structured(module: nn.Module, name: str, amount: Amount, pattern: str = "4x1",
                       importance_scores: Optional[torch.Tensor] = None,
                       criterion_reduce_type: str = "mean") -> nn.Module:
    """Prune ``amount`` units of ``pattern`` in ``module.<name>`` (see :class:`PatternStructured`).

    >>> m = nn.Linear(4, 4)
    >>> with torch.no_grad():
    ...     _ = m.weight.copy_(torch.arange(16.).reshape(4, 4))
    >>> pattern_structured(m, "weight", amount=0.5, pattern="2x1").weight_mask
    tensor([[0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]])
    """
    PatternStructured.apply(module, name, amount, pattern, criterion_reduce_type, importance_scores=importance_scores)
    return module


def nxm_structured(module: nn.Module, name: str, amount: Amount, pattern: str = "4x1",
                   importance_scores: Optional[torch.Tensor] = None,
                   criterion_reduce_type: str = "mean") -> nn.Module:
    """Prune ``amount`` blocks of ``pattern`` (``"NxM"``: N output rows x M input columns)."""
    _require_kind(pattern, "NxM", "nxm_structured", "4x1")
    return pattern_structured(module, name, amount, pattern, importance_scores, criterion_reduce_type)


def n_m_structured(module: nn.Module, name: str, pattern: str = "2:4", amount: Amount = 1.0,
                   importance_scores: Optional[torch.Tensor] = None,
                   criterion_reduce_type: str = "mean") -> nn.Module:
    """N:M-prune ``amount`` of the groups of M consecutive input weights (default: all of them).

    ``"2:4"`` prunes the 2 smallest of every 4, so with ``amount=1.0`` exactly half of each group stays.

    >>> m = n_m_structured(nn.Linear(8, 2), "weight", "2:4")
    >>> m.weight_mask.reshape(-1, 4).sum(dim=1).tolist()
    [2.0, 2.0, 2.0, 2.0]
    """
    _require_kind(pattern, "N:M", "n_m_structured", "2:4")
    return pattern_structured(module, name, amount, pattern, importance_scores, criterion_reduce_type)


__all__ = ["PatternStructured", "pattern_structured", "nxm_structured", "n_m_structured"]
