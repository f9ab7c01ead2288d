"""Exact selection of the lowest-scored units, per layer or across layers, one piece of a layer at a time.

Global selection ranks every unit of every layer in one total order — by score, then layer order, then
flat index — and prunes the first ``k`` units of that order, subject to per-layer lower and upper bounds.
It never concatenates the layers' scores and never holds more than a piece of one layer: a radix select
over order-preserving integer keys (32-bit for float32 scores, 64-bit once a float64 layer shows up)
reads the layers piece by piece, a digit per read. After the first read only the units whose key shares
the digits found so far are still in the running; they are kept between reads while they take less
than :func:`cache_budget`, otherwise the layers are read again. So float32 scores are typically read
twice to find the cut, then once more to apply it.

A layer is an array, or a *source*: a function returning the layer's unit scores afresh, piece by piece,
so scores can be computed on the fly and dropped after each piece. Ties are broken by position, so the
same scores give the same masks on every backend.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError

#: Units per piece when a layer given as an array is read in pieces (bounds the temporaries of a read).
PIECE = 1 << 16

Source = Callable[[], Iterable[np.ndarray]]
Scores = Union[np.ndarray, Source]


def count_for_ratio(n: int, ratio: float) -> int:
    """``floor(n * ratio)``, tolerant of binary rounding (0.57 * 100 is 57, not 56)."""
    return int(math.floor(round(n * ratio, 6)))


def count_at_least(n: int, ratio: float) -> int:
    """``ceil(n * ratio)``, tolerant of binary rounding."""
    return int(math.ceil(round(n * ratio, 6)))


def as_score_array(scores: np.ndarray, name: str = "") -> np.ndarray:
    """Flatten to a float32/float64 1-D array with ``-0.0`` folded into ``0.0``; NaN is an error."""
    a = np.asarray(scores)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    a = a.reshape(-1)
    if np.isnan(a).any():
        raise ConfigError(f"scores of layer {name!r} contain NaN; check the weights and gradients of that layer")
    return a + a.dtype.type(0.0)  # copy; turns -0.0 into +0.0 so float order equals key order


def _keys(a: np.ndarray, wide: bool) -> np.ndarray:
    """Order-preserving unsigned keys: uint32 of float32 values, or uint64 of float64 (float32 widened exactly)."""
    if wide:
        bits = np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)
        return bits ^ ((bits.view(np.int64) >> 63).view(np.uint64) | np.uint64(1 << 63))
    bits = np.ascontiguousarray(a).view(np.uint32)
    return bits ^ ((bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(1 << 31))


def _key_to_float(key: int, wide: bool):
    nbits = 64 if wide else 32
    bits = key ^ (1 << (nbits - 1)) if key >> (nbits - 1) else ~key & ((1 << nbits) - 1)
    return np.array([bits], dtype=np.uint64 if wide else np.uint32).view(np.float64 if wide else np.float32)[0]


def lowest_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` lowest entries of a 1-D array; ties go to the lower index."""
    n = scores.size
    out = np.zeros(n, dtype=bool)
    if count <= 0:
        return out
    if count >= n:
        out[:] = True
        return out
    v = np.partition(scores, count - 1)[count - 1]
    return Cutter(Cut(count, v, count - int(np.count_nonzero(scores < v))))(scores, out)


def _clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)


class Cut(NamedTuple):
    """Which units of one layer are pruned: every unit scored below ``value``, then the first ``ties`` units
    scored exactly ``value`` in unit order (``value=None``: all ``count`` units or none)."""

    count: int
    value: Optional[float]
    ties: int


class Cutter:
    """Applies a :class:`Cut` to a layer's unit scores given piece by piece, in unit order."""

    def __init__(self, cut: Cut) -> None:
        self.value, self.ties_left, self.all = cut.value, cut.ties, cut.count > 0

    def __call__(self, piece: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        if out is None:
            out = np.empty(piece.shape, dtype=bool)
        if self.value is None:
            out[...] = self.all
            return out
        np.less(piece, self.value, out=out)
        if self.ties_left > 0:
            ties = np.flatnonzero(piece == self.value)[: self.ties_left]
            out.reshape(-1)[ties] = True
            self.ties_left -= ties.size
        return out


def _pieces(scores: Scores) -> Iterator[np.ndarray]:
    if callable(scores):
        yield from scores()
        return
    flat = scores.reshape(-1)
    for start in range(0, flat.size, PIECE):
        yield flat[start:start + PIECE]


class _Widen(Exception):
    """A float64 piece showed up during a 32-bit select: start again with 64-bit keys."""


class _Layer:
    """Running state of one layer during a radix select (``weight``: what one of its units counts for)."""

    def __init__(self, scores: Scores, lo: int, hi: int, weight: int = 1) -> None:
        self.scores, self.lo, self.hi, self.weight = scores, lo, hi, weight
        self.below = 0  # units whose key is below the current range
        self.cached: Optional[np.ndarray] = None  # keys of the units in the current range, when kept
        self.hist: Optional[np.ndarray] = None
        self.total_below = 0  # ``below`` of the whole layer (summed over the processes under a reduce)

    def candidates(self, start: int, bits: int, budget: int, wide: bool) -> Iterator[np.ndarray]:
        """Keys in ``[start, start + 2**bits)``, counting those below into ``below``; keeps up to ``budget``."""
        if self.cached is not None:
            parts: Iterable[np.ndarray] = [self.cached]
        else:
            self.below = 0
            parts = (_keys(p, wide) for p in self._read(wide))
        kept: Optional[List[np.ndarray]] = [] if budget > 0 else None
        for keys in parts:
            if bits < keys.dtype.itemsize * 8:
                above = keys >> bits
                want = start >> bits
                self.below += int(np.count_nonzero(above < want))
                keys = keys[above == want]
            if kept is not None:
                budget -= keys.size
                if budget >= 0:
                    kept.append(keys)
                else:
                    kept = None
            yield keys
        self.cached = None if kept is None else (kept[0] if len(kept) == 1 else np.concatenate(kept))

    def _read(self, wide: bool) -> Iterator[np.ndarray]:
        for p in _pieces(self.scores):
            if p.dtype not in (np.float32, np.float64):
                p = p.astype(np.float32)
            elif p.dtype == np.float64 and not wide:
                raise _Widen
            yield p


#: Digit widths from the top bit. The last digit is narrow: its per-layer histograms are kept until the
#: digit is known.
_PLAN = {False: [16, 8, 8], True: [16, 16, 16, 8, 8]}


#: ``reduce(counts)`` → the same int64 array summed over the processes that each hold a piece of every layer
#: (an all_reduce); see :func:`global_cuts`.
Reduce = Callable[[np.ndarray], np.ndarray]


def _radix(layers: List[_Layer], k: int, total_units: int, cache_bytes: int,
           reduce: Optional[Reduce] = None) -> Tuple[int, List[int], List[int], bool]:
    """The key of the ``k``-th unit of the bounded order, per layer how many keys are below / equal to it,
    and whether keys are 64-bit.

    Needs ``sum(lo) < k <= sum(hi)``. Keys are 32-bit until a float64 piece shows up (in the first read);
    then the select starts again with 64-bit keys. Keys still in the running are kept between reads, up
    to ``cache_bytes`` of them.
    """
    try:
        return _radix_with(layers, k, total_units, cache_bytes, False, reduce)
    except _Widen:
        for layer in layers:
            layer.cached, layer.below = None, 0
        return _radix_with(layers, k, total_units, cache_bytes, True, reduce)


def _radix_with(layers, k, total_units, cache_bytes, wide, reduce=None):
    start, top = 0, 64 if wide else 32
    plan = _PLAN[wide]
    for step, width in enumerate(plan):
        shift = top - width
        units = cache_bytes // (8 if wide else 4)
        budget = units if step or total_units <= units else 0
        total = np.zeros(1 << width, dtype=np.int64)
        pending = []  # with reduce: every layer's [below, *hist] of this digit, summed over the processes at once
        for layer in layers:
            hist = np.zeros(1 << width, dtype=np.int64)
            for keys in layer.candidates(start, top, budget, wide):
                digit = keys >> shift
                if top < digit.dtype.itemsize * 8:
                    digit &= (1 << width) - 1
                hist += np.bincount(digit, minlength=1 << width)
            if layer.cached is not None:
                budget -= layer.cached.size
            if reduce is not None:
                pending.append(np.concatenate([[layer.below], hist]))
                continue
            layer.hist, layer.total_below = hist, layer.below
        if reduce is not None:
            summed = reduce(np.stack(pending))
            for layer, row in zip(layers, summed):
                layer.hist, layer.total_below = row[1:], int(row[0])
        for layer in layers:
            cum = np.cumsum(layer.hist)
            cum += layer.total_below
            if step != len(plan) - 1:
                layer.hist = None  # only the last digit's are needed
            np.clip(cum, layer.lo, layer.hi, out=cum)
            if layer.weight != 1:
                cum *= layer.weight
            total += cum
        j = int(np.searchsorted(total, k, side="left"))  # first digit with F(<= digit) >= k
        start |= j << shift
        top = shift
    lt = [layer.total_below + int(layer.hist[:j].sum()) for layer in layers]
    eq = [int(layer.hist[j]) for layer in layers]
    return start, lt, eq, wide


def cache_budget(largest_layer: int) -> int:
    """Bytes of keys a select may keep between reads: one per weight of the largest layer."""
    return max(largest_layer, 1 << 15)


def _cache_bytes(scores: Sequence[Scores], cache_bytes: Optional[int]) -> int:
    if cache_bytes is not None:
        return cache_bytes
    return cache_budget(max([s.size for s in scores if not callable(s)] + [PIECE]))


def layer_cut(scores: Scores, count: int, size: int, cache_bytes: Optional[int] = None,
              reduce: Optional[Reduce] = None) -> Cut:
    """The :class:`Cut` pruning the ``count`` lowest of one layer's ``size`` units (ties to lower positions).

    With ``reduce``, ``scores`` is this process's piece of the layer and ``size`` the whole layer's (see
    :func:`global_cuts`)."""
    if count <= 0 or count >= size:
        return Cut(max(0, min(count, size)), None, 0)
    key, lt, _, wide = _radix([_Layer(scores, 0, size)], count, size, _cache_bytes([scores], cache_bytes), reduce)
    return Cut(count, _key_to_float(key, wide), count - lt[0])


def _bounded(scores, sizes, k, lo, hi, cache, weights=None, reduce=None):
    """Counts per layer, the threshold (None without a search) and per layer the units below / at it.

    With ``weights`` (what one unit of each layer counts for), ``k`` is a total of weights: the layers take
    the longest prefix of the order (score, layer, index) whose weights add up to at most ``k``.
    """
    w = [1] * len(sizes) if weights is None else [int(x) for x in weights]
    floor_total = sum(l * x for l, x in zip(lo, w))
    k = int(min(max(k, floor_total), sum(h * x for h, x in zip(hi, w))))
    if k == floor_total:
        return list(lo), None, None, None
    key, lt, eq, wide = _radix([_Layer(s, l, h, x) for s, l, h, x in zip(scores, lo, hi, w)], k, sum(sizes), cache,
                               reduce)
    base = [int(_clip(c, l, h)) for c, l, h in zip(lt, lo, hi)]
    remaining = k - sum(b * x for b, x in zip(base, w))
    counts = []
    for c_lt, c_eq, b, l, h, x in zip(lt, eq, base, lo, hi, w):
        avail = int(_clip(c_lt + c_eq, l, h)) - b
        take = min(avail, remaining // x)
        remaining = remaining - take * x if take == avail else 0  # a unit that does not fit ends the prefix
        counts.append(b + take)
    return counts, _key_to_float(key, wide), lt, eq


def global_cuts(scores: Sequence[Scores], sizes: Sequence[int], k: int, lo: Sequence[int], hi: Sequence[int],
                cache_bytes: Optional[int] = None, weights: Optional[Sequence[int]] = None,
                reduce: Optional[Reduce] = None) -> Tuple[List[Cut], Optional[float]]:
    """One :class:`Cut` per layer for the ``k`` globally lowest units within per-layer bounds, and the threshold.

    Layer ``l`` prunes ``c_l`` units with ``lo[l] <= c_l <= hi[l]`` and ``sum(c) == k`` (``k`` is first
    clipped to ``[sum(lo), sum(hi)]``): the units of the order (score, layer, index) up to the threshold,
    where a layer whose bound binds takes its own ``c_l`` lowest instead. ``scores`` holds arrays or
    sources (see the module doc); ``cache_bytes`` caps the keys kept between reads. With ``weights``, a
    unit of layer ``l`` counts ``weights[l]`` and ``k`` is the budget in those terms:
    ``sum(c * weights) <= k``, short of it by less than one unit.

    With ``reduce`` (an all_reduce of int64 counts), each process passes its own contiguous piece of every
    layer's units and ``sizes``, ``k`` and the bounds of the whole layers: the radix select's histograms are
    summed over the processes, so every process gets the cuts of the whole model without any process holding
    it. A cut's ``ties`` then count the tied units of the whole layer, in the order of the pieces.
    """
    lo_a, hi_a = [int(v) for v in lo], [int(v) for v in hi]
    cache = _cache_bytes(scores, cache_bytes)
    counts, v, lt, eq = _bounded(scores, sizes, k, lo_a, hi_a, cache, weights, reduce)
    if v is None:
        return [layer_cut(s, c, n, cache, reduce) for s, c, n in zip(scores, counts, sizes)], None
    return [Cut(c, v, c - c_lt) if c_lt <= c <= c_lt + c_eq else layer_cut(s, c, n, cache, reduce)
            for s, n, c, c_lt, c_eq in zip(scores, sizes, counts, lt, eq)], v


def global_counts(
    scores: Sequence[Scores], k: int, lo: Sequence[int], hi: Sequence[int], sizes: Optional[Sequence[int]] = None
) -> Tuple[List[int], "np.floating | None"]:
    """How many units each layer prunes when the ``k`` globally lowest are pruned within bounds.

    Returns the counts and the threshold score (``None`` when no search was needed). ``sizes`` is needed
    only when some layers are sources.
    """
    sizes = [s.size for s in scores] if sizes is None else sizes
    counts, v, _, _ = _bounded(scores, sizes, k, [int(x) for x in lo], [int(x) for x in hi],
                               _cache_bytes(scores, None))
    return counts, v


def select_global(
    scores: Sequence[np.ndarray], k: int, lo: Sequence[int], hi: Sequence[int]
) -> List[np.ndarray]:
    """Prune masks (True = pruned) of the ``k`` globally lowest units within per-layer bounds."""
    cuts, _ = global_cuts(scores, [s.size for s in scores], k, lo, hi)
    return [Cutter(c)(s) for s, c in zip(scores, cuts)]
