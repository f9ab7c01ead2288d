"""Local-scope masks written against an array namespace (:mod:`nc_prune.core.xp`), so a backend computes them
on its own tensors, on their device, without a copy to numpy.

:meth:`Pattern.get_masks_local` (numpy, one piece of a layer at a time) is the reference; this module gives the
same masks bit for bit on the same scores, ties included (ties go to the lower unit index), for what it covers:

* ``NxM`` blocks (:class:`~.nxm.BlockUnits`): ``max`` always; ``mean`` / ``sum`` when numpy's reduction order is
  known — blocks less than 8 columns wide (numpy adds such a block's columns in order, then its rows in order,
  as :func:`_sum_blocks` does) on a C-contiguous 2-D view, or one side 1 on any layout. Wider blocks
  (``1xchannel``) use numpy's pairwise summation, which this module does not redo: they stay on the reference.
* ``N:M`` groups (:class:`~.ninm.GroupUnits`) with ``N < 8`` and scores free of NaN.

Anything else — global scope, couplings (heads, channels spanning layers), whole input channels
(``channelx1``), patterns registered by users — returns None from :func:`local_masks`, and the caller takes the
reference path. The per-layer counts, bounds, warnings and errors are the reference's.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..selection import count_at_least, count_for_ratio
from .ninm import GroupUnits
from .nxm import BlockUnits

#: Longest run numpy adds one element after another (``pairwise_sum`` switches to 8 accumulators from 8 on).
_SEQUENTIAL = 8


def supported(lu: Any, reduce_type: str, contiguous: bool) -> bool:
    """Whether :func:`local_masks` reproduces the reference for this layer's units."""
    if type(lu) is BlockUnits:
        if lu.unit_size == 1 or reduce_type == "max":
            return True
        if reduce_type not in ("mean", "sum"):
            return False
        if contiguous or len(lu.shape) > 2:  # numpy's 2-D view of a conv is a C-contiguous copy
            return lu.bw < _SEQUENTIAL
        return min(lu.bh, lu.bw) == 1 and max(lu.bh, lu.bw) < _SEQUENTIAL
    if type(lu) is GroupUnits:
        return lu.n < _SEQUENTIAL and reduce_type in ("mean", "sum", "max")
    return False


def _shape(value) -> Tuple[int, ...]:
    return tuple(int(s) for s in value.shape)


def local_masks(pattern: Any, scores: Mapping[str, Any], target: float, pre: Optional[Mapping[str, Any]],
                max_ratio: Optional[float], ns: Any) -> Optional[Dict[str, Any]]:
    """Keep-masks of :meth:`Pattern.get_masks_local` computed with ``ns`` (canonical layout, bool arrays of
    ``ns``), or None when some layer is outside what this module covers (see the module doc).

    ``scores`` and ``pre`` hold arrays of ``ns`` (float32/float64 scores; ``pre`` bool keep-masks)."""
    if pattern.is_global or getattr(pattern, "couplings", None):
        return None
    if not 0.0 <= float(target) <= 1.0:
        raise ConfigError(f"target sparsity {target!r} is outside [0, 1]")
    pre = {n: pre[n] for n in scores if pre is not None and n in pre}
    for n, m in pre.items():
        shape = _shape(scores[n])
        if _shape(m) != shape:
            raise ConfigError(f"pre_masks[{n!r}] has shape {_shape(m)} but its scores have shape {shape}")
    fitting = pattern._fitting(scores)
    reduce_type = pattern.reduce_type
    for n, lu in fitting.items():
        if not supported(lu, reduce_type, ns.is_contiguous(scores[n])):
            return None
        if type(lu) is GroupUnits and ns.any_nan(scores[n]):
            return None  # the reference ranks NaN last within a group; it is rare enough to leave there
    max_ratio = pattern.max_sparsity_ratio_per_op if max_ratio is None else float(max_ratio)
    min_ratio = min(pattern.min_sparsity_ratio_per_op, max_ratio)
    out: Dict[str, Any] = {}
    for name, score in scores.items():
        keep_pre = pre.get(name)
        lu = fitting.get(name)
        if lu is None:
            keep = ns.ones_bool(_shape(score), score)
        else:
            s2 = ns.to_2d(score)
            k2 = None if keep_pre is None else ns.to_2d(keep_pre)
            if type(lu) is GroupUnits:
                units, done, where = _group_units(lu, s2, k2, reduce_type, ns)
            else:
                units, done, where = _block_units(lu, s2, k2, reduce_type, ns), _block_done(lu, k2, ns), None
            n_done = 0 if done is None else ns.count(done)
            n = lu.n_units
            lo_l = count_at_least(n, min(1.0, min_ratio * lu.ratio_scale))
            hi_l = count_for_ratio(n, min(1.0, max_ratio * lu.ratio_scale))
            want = count_for_ratio(n, min(1.0, float(target) * lu.ratio_scale))
            count = max(min(max(want, lo_l), hi_l), n_done)
            if ns.any_nan(units):
                raise ConfigError(f"scores of layer {name!r} contain NaN; check the weights and gradients of that layer")
            if n_done > 0:  # pruned units rank first, ahead of a score of -inf passed in (the lowest finite)
                units = ns.where(done, -float("inf"), ns.maximum(units, ns.finfo_min(units)))
            prune = lowest_units(units, count, ns)
            if type(lu) is GroupUnits:
                element = where & ns.expand_dims(prune, -1)
            else:
                g = ns.reshape(prune, (-1, 1, lu.grid[1], 1))
                element = ns.broadcast(g, (lu.grid[0], lu.bh, lu.grid[1], lu.bw))
            keep = ~ns.from_2d(ns.reshape(element, (lu.rows, lu.cols)), lu.shape)
        if keep_pre is not None:
            keep = keep & keep_pre
        out[name] = keep
    return out


def lowest_units(units: Any, count: int, ns: Any) -> Any:
    """Prune mask of the ``count`` lowest of 1-D ``units``; ties go to the lower index (the reference's
    :class:`~nc_prune.core.selection.Cut`: every unit below the ``count``-th value, then the first ones equal)."""
    n = int(units.shape[0])
    if count <= 0:
        return ns.zeros_bool((n,), units)
    if count >= n:
        return ns.ones_bool((n,), units)
    v = ns.kth_smallest(units, count)
    at_most = units <= v
    if ns.count(at_most) == count:  # no tie past the cut (the usual case): one comparison
        return at_most
    below = units < v
    ties = count - ns.count(below)
    equal = units == v
    if ns.count(equal) == ties:
        return below | equal
    return below | ns.first_true(equal, ties)


def _sum_blocks(b: Any, bh: int, bw: int) -> Any:
    """Sum of each ``bh x bw`` block of ``b`` (``(block rows, bh, block cols, bw)``): its columns in order, then
    its rows in order — numpy's order for such a reduction (``sum(axis=(1, 3))``)."""
    t = b[..., 0]
    for j in range(1, bw):
        t = t + b[..., j]
    s = t[:, 0]
    for i in range(1, bh):
        s = s + t[:, i]
    return s


def _block_units(lu: BlockUnits, s2: Any, k2: Any, reduce_type: str, ns: Any) -> Any:
    b = ns.reshape(s2, (-1, lu.bh, lu.grid[1], lu.bw))
    if lu.unit_size == 1:
        return ns.reshape(b, (-1,))
    if reduce_type == "max":
        return ns.reshape(ns.amax(b, (1, 3)), (-1,))
    total = _sum_blocks(b, lu.bh, lu.bw)
    if reduce_type == "mean":
        total = total / lu.unit_size
    return ns.reshape(total, (-1,))


def _block_done(lu: BlockUnits, k2: Any, ns: Any) -> Any:
    """Blocks with no weight kept (an OR over the block's columns, then rows: 20x faster than torch.any over
    two dims on CPU)."""
    if k2 is None:
        return None
    b = ns.reshape(k2, (-1, lu.bh, lu.grid[1], lu.bw))
    t = b[..., 0]
    for j in range(1, lu.bw):
        t = t | b[..., j]
    s = t[:, 0]
    for i in range(1, lu.bh):
        s = s | t[:, i]
    return ns.reshape(~s, (-1,))


def _group_units(lu: GroupUnits, s2: Any, k2: Any, reduce_type: str, ns: Any):
    """Unit scores, already pruned, and the positions of each group's N lowest (pruned weights first, then by
    score, ties to the lower position), as :class:`~.ninm.GroupUnits` ranks them."""
    g = ns.reshape(s2, (-1, lu.m))
    done = None
    key = g
    if k2 is not None:
        kg = ns.reshape(k2, (-1, lu.m))
        done = ns.count_axis(~kg, -1) >= lu.n
        key = ns.where(kg, ns.maximum(g, ns.finfo_min(g)), -float("inf"))
    cols = [key[:, i] for i in range(lu.m)]
    ranks = []
    for i in range(lu.m):  # rank = keys below + equal keys to the left: a stable sort's position
        r = None
        for j in range(lu.m):
            if j == i:
                continue
            hit = cols[j] <= cols[i] if j < i else cols[j] < cols[i]
            r = ns.as_uint8(hit) if r is None else r + ns.as_uint8(hit)
        ranks.append(ns.zeros_uint8(cols[i]) if r is None else r)
    values = []
    for rank in range(lu.n):
        v = g[:, 0]
        for i in range(1, lu.m):
            v = ns.where(ranks[i] == rank, g[:, i], v)
        values.append(v)
    if reduce_type == "max":
        units = values[0]
        for v in values[1:]:
            units = ns.maximum(units, v)
    else:
        units = values[0]
        for v in values[1:]:
            units = units + v
        if reduce_type == "mean" and lu.n > 1:
            units = units / lu.n
    where = ns.stack([r < lu.n for r in ranks], -1)
    return units, done, where
