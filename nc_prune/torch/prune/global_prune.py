"""Global pruning: one ranking over many parameters.

:func:`global_unstructured` is PyTorch's, with the same masks. For :class:`L1Unstructured` and
:class:`RandomUnstructured` it never concatenates the scores: the engine's exact selection finds the cut
(see ``_select``), which takes about a second for 33.5M weights where PyTorch's ``torch.topk`` over the
concatenation takes many. Any other method (your own ``"unstructured"`` method) runs exactly as in
PyTorch, over the concatenation.

:func:`global_structured` ranks blocks, channels or N:M groups of all parameters together, within the
engine's per-layer bounds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...core.config import DEFAULTS, _number
from ...core.errors import ConfigError, ConfigTypeError, NoPrunableLayerError, PatternShapeError, warn_user
from ...core.masks import compute_masks
from ._errors import GlobalScoresShapeError
from ._select import topk_masks
from .base import Amount, PruningContainer, _check_target, units_to_prune, validate_amount, validate_amount_init
from .methods import CountedUnstructured, L1Unstructured, RandomUnstructured, custom_from_mask
from .patterns import engine_pattern, fitting_units, unit_target

Pair = Tuple[nn.Module, str]


def _pairs(parameters: Any, func: str) -> List[Pair]:
    if not isinstance(parameters, Iterable):
        raise ConfigTypeError(f"{func}(): parameters must be an iterable of (module, name) pairs, "
                              f"got {type(parameters).__name__}")
    pairs = [_pair(pair, i, func) for i, pair in enumerate(parameters)]  # a generator is read once, not twice
    if not pairs:
        raise NoPrunableLayerError(f"{func}(): parameters is empty, so there is nothing to prune; pass at least one "
                                   f"(module, name) pair, e.g. [(model.fc, 'weight')]")
    return pairs


def _pair(pair: Any, i: int, func: str) -> Pair:
    """``module, name = pair``, as PyTorch unpacks it: a non-iterable is a TypeError, another length a ValueError."""
    try:
        module, name = pair
    except TypeError:
        raise ConfigTypeError(f"{func}(): parameters[{i}] must be a (module, name) pair, got "
                              f"{type(pair).__name__} {pair!r:.80}") from None
    except ValueError:
        raise ConfigError(f"{func}(): parameters[{i}] must be a (module, name) pair of 2 items, got "
                          f"{pair!r:.80}") from None
    _check_target(module, name, func)
    return module, name


def _scores(pairs: Sequence[Pair], importance_scores: Any, func: str) -> List[torch.Tensor]:
    given = {} if importance_scores is None else importance_scores
    if not isinstance(given, dict):
        raise ConfigTypeError(f"{func}(): importance_scores must be a dict {{(module, name): tensor}}, "
                              f"got {type(given).__name__}")
    out = []
    for i, (module, name) in enumerate(pairs):
        tensor = getattr(module, name)
        score = given.get((module, name), tensor)
        if score.shape != tensor.shape:
            raise GlobalScoresShapeError(f"{func}(): importance_scores for parameters[{i}] ({type(module).__name__}."
                                         f"{name}) have shape {tuple(score.shape)}, the parameter "
                                         f"{tuple(tensor.shape)}; they must match")
        out.append(score)
    return out


def _current_mask(module: nn.Module, name: str) -> Optional[torch.Tensor]:
    return module._buffers.get(name + "_mask")


def global_unstructured(parameters: Iterable, pruning_method: type,
                        importance_scores: Optional[Dict[Pair, torch.Tensor]] = None, **kwargs: Any) -> None:
    """Prune the listed parameters together, ranking all their entries as one tensor.

    Args:
        parameters: ``(module, name)`` pairs.
        pruning_method: a method class with ``PRUNING_TYPE == "unstructured"`` (``L1Unstructured``,
            ``RandomUnstructured`` or your own).
        importance_scores: ``{(module, name): scores}``; a missing pair is ranked by the parameter itself.
        kwargs: the method's arguments, e.g. ``amount`` — a count, or a fraction of the entries still unpruned.

    >>> net = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 1))
    >>> global_unstructured([(net[0], "weight"), (net[1], "weight")], L1Unstructured, amount=10)
    >>> int((net[0].weight_mask == 0).sum() + (net[1].weight_mask == 0).sum())
    10
    """
    pairs = _pairs(parameters, "global_unstructured")
    scores = _scores(pairs, importance_scores, "global_unstructured")
    method = pruning_method(**kwargs)
    method._tensor_name = "temp"
    if getattr(method, "PRUNING_TYPE", None) != "unstructured":
        raise ConfigTypeError(f"global_unstructured() needs a method with PRUNING_TYPE 'unstructured'; "
                              f"{pruning_method.__name__} has {getattr(method, 'PRUNING_TYPE', None)!r}. "
                              f"For blocks or channels use global_structured()")
    masks = [_current_mask(m, n) for m, n in pairs]
    kind = type(method)
    if kind.compute_mask is CountedUnstructured.compute_mask and \
            kind.picked in (L1Unstructured.picked, RandomUnstructured.picked):
        final = _selected_masks(method, scores, masks)
    else:
        final = _joined_masks(method, scores, masks)
    for (module, name), mask in zip(pairs, final):
        custom_from_mask(module, name, mask=mask)


def _joined_masks(method, scores, masks) -> List[torch.Tensor]:
    """PyTorch's way, for methods we do not know: one container over the concatenation."""
    joined = torch.cat([s.reshape(-1) for s in scores])
    default = torch.cat([(torch.ones_like(s) if m is None else m).reshape(-1) for s, m in zip(scores, masks)])
    container = PruningContainer()
    container._tensor_name = "temp"
    container.add_pruning_method(method)
    final = container.compute_mask(joined, default)
    return [part.view_as(s) for part, s in zip(torch.split(final, [s.numel() for s in scores]), scores)]


def _selected_masks(method, scores, masks) -> List[torch.Tensor]:
    """The same masks as ``_joined_masks`` for L1 / random methods, without concatenating the scores."""
    dtype = functools.reduce(torch.promote_types, [s.dtype for s in scores])
    alive = [None if m is None else m.reshape(-1) == 1 for m in masks]
    sizes = [s.numel() if a is None else int(a.sum()) for s, a in zip(scores, alive)]
    total = sum(sizes)
    count = units_to_prune(method.amount, total)
    validate_amount(count, total, "unpruned entries")
    if count == 0:
        picks = [torch.zeros(n, dtype=torch.bool) for n in sizes]
    elif type(method).picked is L1Unstructured.picked:
        values = [torch.abs(s.detach()).reshape(-1) for s in scores]
        values = [v if a is None else v[a] for v, a in zip(values, alive)]
        picks = topk_masks(values, count, largest=False)
    else:  # the same random draw PyTorch makes: one rand_like over the unpruned entries, in order
        draw = torch.rand(total, dtype=dtype, device=scores[0].device)
        picks = topk_masks(list(torch.split(draw, sizes)), count, largest=True)
    out = []
    for s, m, a, p in zip(scores, masks, alive, picks):
        mask = (torch.ones(s.numel(), dtype=dtype, device=s.device) if m is None
                else m.reshape(-1).to(dtype=dtype, copy=True))
        if a is None:
            mask[p.to(mask.device)] = 0
        else:  # zero the picked entries among the unpruned ones
            kept = mask[a]
            kept[p.to(kept.device)] = 0
            mask[a] = kept
        out.append(mask.view(s.shape))
    return out


def global_structured(parameters: Iterable, amount: Amount, pattern: str = "4x1",
                      importance_scores: Optional[Dict[Pair, torch.Tensor]] = None,
                      max_sparsity_ratio_per_op: float = DEFAULTS["max_sparsity_ratio_per_op"],
                      min_sparsity_ratio_per_op: float = DEFAULTS["min_sparsity_ratio_per_op"],
                      criterion_reduce_type: str = "mean") -> None:
    """Prune blocks, channels or N:M groups of the listed parameters, ranked together.

    Each unit's score is the mean (``criterion_reduce_type``) of ``|importance_scores|`` over it, so
    layers of different sizes compare fairly. Every layer keeps its share within
    ``[min_sparsity_ratio_per_op, max_sparsity_ratio_per_op]`` of its units. A parameter whose shape
    does not fit ``pattern`` is left dense (with a warning).

    Args:
        parameters: ``(module, name)`` pairs.
        amount: units to prune — an int count, or a fraction of the units still unpruned.
        pattern: ``"4x1"``, ``"1xchannel"``, ``"channelx1"``, ``"2:4"``, ... (see ``patterns``).
        importance_scores: ``{(module, name): scores}``; a missing pair is ranked by the parameter itself.
        max_sparsity_ratio_per_op / min_sparsity_ratio_per_op: per-layer bounds, as fractions of units.
        criterion_reduce_type: ``"mean"``, ``"sum"`` or ``"max"``.

    >>> net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    >>> global_structured([(net[0], "weight"), (net[1], "weight")], amount=0.5, pattern="1xchannel")
    >>> int((net[0].weight_mask.sum(1) == 0).sum() + (net[1].weight_mask.sum(1) == 0).sum())
    6
    """
    validate_amount_init(amount)
    hi = _number("max_sparsity_ratio_per_op", max_sparsity_ratio_per_op, None, 0.0, 1.0)
    lo = _number("min_sparsity_ratio_per_op", min_sparsity_ratio_per_op, None, 0.0, 1.0)
    pairs = _pairs(parameters, "global_structured")
    scores = _scores(pairs, importance_scores, "global_structured")
    labels = [f"parameters[{i}] ({type(m).__name__}.{n})" for i, (m, n) in enumerate(pairs)]
    pat = engine_pattern(pattern, criterion_reduce_type, "global", hi, lo)
    units, misfits = {}, {}
    for lab, s in zip(labels, scores):
        try:
            units[lab] = fitting_units(pat, lab, tuple(s.shape))
        except PatternShapeError as exc:
            misfits[lab] = str(exc)
    if not units:
        raise NoPrunableLayerError(f"global_structured(): no parameter fits pattern {pattern!r}: "
                                   + "; ".join(misfits.values()) + ". Choose a pattern these shapes fit")
    for reason in misfits.values():
        warn_user(f"global_structured(): {reason}; that parameter is left dense")
    pre = {lab: _current_mask(m, n) != 0 for lab, (m, n) in zip(labels, pairs)
           if lab in units and _current_mask(m, n) is not None}
    target = unit_target(units, pre, amount, pattern)
    keep = compute_masks({lab: torch.abs(s.detach()) for lab, s in zip(labels, scores) if lab in units}, pat,
                         target, scope="global", max_sparsity_ratio_per_op=hi, pre_masks=pre)
    for lab, (module, name) in zip(labels, pairs):
        tensor = getattr(module, name)
        mask = keep[lab] if lab in keep else torch.ones(tensor.shape, dtype=torch.bool)  # a misfit stays as it is
        custom_from_mask(module, name, mask=mask.to(dtype=tensor.dtype))
