"""Exact selection of the lowest-scored units, per layer or across layers.

Global selection ranks every unit of every layer in one total order — by score, then layer order, then
flat index — and prunes the first ``k`` units of that order, subject to per-layer lower and upper bounds.
It never concatenates the layers' scores: a radix select over order-preserving integer keys makes two
passes (float32) or four (float64) over the layers, holding one layer's temporaries at a time. Ties are
broken by position, so the same scores give the same masks on every backend.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np

from .errors import ConfigError

_RADIX_BITS = 16
_BINS = 1 << _RADIX_BITS


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


def _keys(a: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned integer keys of a float32 or float64 array."""
    if a.dtype == np.float32:
        bits, signed, top = a.view(np.uint32), np.int32, np.uint32(1 << 31)
    else:
        bits, signed, top = a.view(np.uint64), np.int64, np.uint64(1 << 63)
    flip = (bits.view(signed) >> (bits.dtype.itemsize * 8 - 1)).view(bits.dtype) | top
    return bits ^ flip


def _key_to_float(key: int, dtype: np.dtype) -> float:
    if dtype == np.float32:
        k = np.array([key], dtype=np.uint32)
        top = np.uint32(1 << 31)
    else:
        k = np.array([key], dtype=np.uint64)
        top = np.uint64(1 << 63)
    neg = (k & top) == 0
    bits = np.where(neg, ~k, k ^ top)
    return bits.view(dtype)[0]


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
    return _mask_below(scores, v, count, out)


def _mask_below(scores: np.ndarray, v, count: int, out: np.ndarray) -> np.ndarray:
    np.less(scores, v, out=out)
    rest = count - int(np.count_nonzero(out))
    if rest > 0:
        ties = np.flatnonzero(scores == v)[:rest]
        out[ties] = True
    return out


def _clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)


def global_counts(
    scores: Sequence[np.ndarray], k: int, lo: Sequence[int], hi: Sequence[int]
) -> Tuple[List[int], "np.floating | None"]:
    """How many units each layer prunes when the ``k`` globally lowest are pruned within bounds.

    Layer ``l`` prunes ``c_l`` units with ``lo[l] <= c_l <= hi[l]`` and ``sum(c) == k`` (``k`` is first
    clipped to ``[sum(lo), sum(hi)]``). The pruned units are a prefix of the order (score, layer, index).
    Returns the counts and the threshold score (``None`` when no search was needed).
    """
    lo_a = np.asarray(lo, dtype=np.int64)
    hi_a = np.asarray(hi, dtype=np.int64)
    k = int(min(max(k, int(lo_a.sum())), int(hi_a.sum())))
    if k == int(lo_a.sum()):
        return [int(v) for v in lo_a], None
    dtype = np.float64 if any(s.dtype == np.float64 for s in scores) else np.float32
    nbits = np.dtype(dtype).itemsize * 8
    prefix = 0  # key bits fixed so far
    for shift in range(nbits - _RADIX_BITS, -1, -_RADIX_BITS):
        total = np.zeros(_BINS, dtype=np.int64)
        for s, l, h in zip(scores, lo_a, hi_a):
            keys = _keys(s.astype(dtype, copy=False))
            if shift + _RADIX_BITS < nbits:
                above = keys >> (shift + _RADIX_BITS)
                want = prefix >> (shift + _RADIX_BITS)
                below = int(np.count_nonzero(above < want))
                keys = keys[above == want]
            else:
                below = 0
            digit = ((keys >> shift) & (_BINS - 1)).astype(np.int64)
            cum = below + np.cumsum(np.bincount(digit, minlength=_BINS))
            total += _clip(cum, l, h)
        j = int(np.searchsorted(total, k, side="left"))  # first digit with F(<= digit) >= k
        prefix |= j << shift
    v = dtype(_key_to_float(prefix, np.dtype(dtype)))
    counts = []
    remaining = k
    lt = [int(np.count_nonzero(s < v)) for s in scores]
    base = [int(_clip(c, l, h)) for c, l, h in zip(lt, lo_a, hi_a)]
    remaining = k - sum(base)
    for s, c_lt, b, l, h in zip(scores, lt, base, lo_a, hi_a):
        c_le = c_lt + int(np.count_nonzero(s == v))
        take = min(int(_clip(c_le, l, h)) - b, remaining)
        remaining -= take
        counts.append(b + take)
    return counts, v


def select_global(
    scores: Sequence[np.ndarray], k: int, lo: Sequence[int], hi: Sequence[int]
) -> List[np.ndarray]:
    """Prune masks (True = pruned) of the ``k`` globally lowest units within per-layer bounds."""
    counts, v = global_counts(scores, k, lo, hi)
    out = []
    for s, c in zip(scores, counts):
        if v is not None:
            below = int(np.count_nonzero(s < v))
            le = below + int(np.count_nonzero(s == v))
            if below <= c <= le:
                out.append(_mask_below(s, v, c, np.empty(s.size, dtype=bool)))
                continue
        out.append(lowest_mask(s, c))
    return out
