"""``compute_masks``: the engine as one pure function."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .coupling import Coupling
from .config import DEFAULTS, GLOBAL_TARGETS, PRUNING_SCOPES, REDUCE_TYPES, _choice, _number
from .errors import ConfigTypeError, NoPrunableLayerError
from .patterns.base import Pattern, get_pattern


def compute_masks(
    scores: Mapping[str, Any],
    pattern: Union[str, Pattern],
    target_sparsity: float,
    scope: str = "global",
    max_sparsity_ratio_per_op: float = DEFAULTS["max_sparsity_ratio_per_op"],
    min_sparsity_ratio_per_op: float = DEFAULTS["min_sparsity_ratio_per_op"],
    pre_masks: Optional[Mapping[str, Any]] = None,
    criterion_reduce_type: str = "mean",
    global_target: str = DEFAULTS["global_target"],
    couplings: Optional[Sequence[Coupling]] = None,
) -> Dict[str, Any]:
    """Boolean keep-masks (True = keep) for ``scores``; lower scores are pruned first.

    Args:
        scores: ``{name: array}`` in the canonical layout ``(out, in, *kernel)`` — how torch stores
            Linear and Conv weights. numpy arrays or torch tensors; masks come back as the same type,
            shape and device. The engine reads ``scores[name]`` once per pass over the layers and keeps
            only pieces of one layer at a time, so the mapping may compute each layer's scores when it
            is read (how ``benchmarks/mask_3b.py`` masks 3e9 bf16 weights without a float copy).
        pattern: ``"4x1"``, ``"1x1"``, ``"1xchannel"``, ``"channelx1"``, ``"2:4"``, a registered pattern
            name, or a :class:`Pattern` instance.
        target_sparsity: fraction of the weights to prune (see ``global_target``).
        scope: ``"global"`` ranks all layers together; ``"local"`` applies the target to each layer.
        max_sparsity_ratio_per_op / min_sparsity_ratio_per_op: per-layer bounds.
        pre_masks: earlier masks; what they prune stays pruned.
        criterion_reduce_type: how a block's scores become one (``mean``, ``sum``, ``max``).
        global_target: in global scope, ``"weights"`` makes the target a fraction of the weights — units
            of different sizes (``1xchannel`` over rows of different lengths) each count their size, and the
            pruned weights fall short of the target by less than one unit — and ``"units"`` a fraction of the
            units, as INC counted. Units of one size give the same masks either way.
        couplings: :class:`~nc_prune.core.coupling.Coupling` s ranked as units of their own (a head over q, k,
            v and o; a channel over ``up`` and ``down``): their members' masks come from them.

    >>> import numpy as np
    >>> w = np.array([[9., 1.], [8., 1.], [1., 7.], [1., 7.]])
    >>> compute_masks({"fc": np.abs(w)}, "2x1", 0.5)["fc"].astype(int)
    array([[1, 0],
           [1, 0],
           [0, 1],
           [0, 1]])
    """
    if not isinstance(scores, Mapping):
        raise ConfigTypeError(f"scores must be a dict {{name: array}}, got {type(scores).__name__}")
    if not scores:
        raise NoPrunableLayerError("scores is empty: there is no layer to compute a mask for")
    _number("target_sparsity", target_sparsity, None, 0.0, 1.0)
    _choice("scope", scope, None, PRUNING_SCOPES)
    _choice("criterion_reduce_type", criterion_reduce_type, None, REDUCE_TYPES)
    _choice("global_target", global_target, None, GLOBAL_TARGETS)
    hi = _number("max_sparsity_ratio_per_op", max_sparsity_ratio_per_op, None, 0.0, 1.0)
    lo = _number("min_sparsity_ratio_per_op", min_sparsity_ratio_per_op, None, 0.0, 1.0)
    if isinstance(pattern, Pattern):
        pat = pattern
    else:
        pat = get_pattern({
            "pattern": pattern, "pruning_scope": scope, "criterion_reduce_type": criterion_reduce_type,
            "max_sparsity_ratio_per_op": hi, "min_sparsity_ratio_per_op": lo, "global_target": global_target,
        })
    if couplings:
        pat.couple(couplings)
    fn = pat.get_masks_global if scope == "global" else pat.get_masks_local
    return fn(scores, target_sparsity, pre_masks, hi)
