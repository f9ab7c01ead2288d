"""Brute-force references for the selection tests, written independently of nc_prune.core.selection.

Everything here is plain Python over a fully sorted list: slow, obviously right, only for small inputs.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np


def floor_count(n: int, ratio: float) -> int:
    """floor(n * ratio) after rounding the product to 6 decimals (what the engine promises)."""
    return math.floor(round(n * ratio, 6))


def ceil_count(n: int, ratio: float) -> int:
    return math.ceil(round(n * ratio, 6))


def _key(x: float) -> float:
    return 0.0 if x == 0 else float(x)  # -0.0 ranks as +0.0


def reference_global(scores: Sequence[np.ndarray], k: int, lo: Sequence[int], hi: Sequence[int]) -> List[np.ndarray]:
    """Prune masks (True = pruned): each layer's ``lo`` lowest first, then the global order within ``hi``.

    The global order is (score, layer index, position) over every unit of every layer.
    """
    flat = [np.asarray(s).reshape(-1) for s in scores]
    k = min(max(k, sum(lo)), sum(hi))
    pruned = [np.zeros(f.size, dtype=bool) for f in flat]
    count = [0] * len(flat)
    for l, f in enumerate(flat):
        own = sorted(range(f.size), key=lambda i: (_key(f[i]), i))
        for i in own[: lo[l]]:
            pruned[l][i] = True
        count[l] = lo[l]
    need = k - sum(lo)
    order = sorted(((_key(f[i]), l, i) for l, f in enumerate(flat) for i in range(f.size)))
    for _, l, i in order:
        if need == 0:
            break
        if pruned[l][i] or count[l] >= hi[l]:
            continue
        pruned[l][i] = True
        count[l] += 1
        need -= 1
    return pruned


def reference_global_weighted(scores: Sequence[np.ndarray], weights: Sequence[int], k: int, lo: Sequence[int],
                              hi: Sequence[int]) -> List[np.ndarray]:
    """As :func:`reference_global`, but a unit of layer ``l`` counts ``weights[l]`` and ``k`` is a total of
    weights: after each layer's ``lo`` lowest, units are taken in the global order while they fit in what is
    left of ``k``; the first that does not fit ends the selection (skipping only units of full layers)."""
    flat = [np.asarray(s).reshape(-1) for s in scores]
    pruned = [np.zeros(f.size, dtype=bool) for f in flat]
    count = [0] * len(flat)
    for l, f in enumerate(flat):
        for i in sorted(range(f.size), key=lambda i: (_key(f[i]), i))[: lo[l]]:
            pruned[l][i] = True
        count[l] = lo[l]
    need = min(k, sum(h * w for h, w in zip(hi, weights))) - sum(c * w for c, w in zip(count, weights))
    for _, l, i in sorted(((_key(f[i]), l, i) for l, f in enumerate(flat) for i in range(f.size))):
        if pruned[l][i] or count[l] >= hi[l]:
            continue
        if weights[l] > need:
            break
        pruned[l][i] = True
        count[l] += 1
        need -= weights[l]
    return pruned


def reference_local(scores: np.ndarray, count: int) -> np.ndarray:
    f = np.asarray(scores).reshape(-1)
    out = np.zeros(f.size, dtype=bool)
    for i in sorted(range(f.size), key=lambda i: (_key(f[i]), i))[:count]:
        out[i] = True
    return out


def block_means(score: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Mean of each bh x bw block of a 2-D array, computed with explicit Python sums (exact for integers)."""
    rows, cols = score.shape
    out = np.empty((rows // bh, cols // bw))
    for r in range(rows // bh):
        for c in range(cols // bw):
            out[r, c] = sum(float(score[r * bh + a, c * bw + b]) for a in range(bh) for b in range(bw)) / (bh * bw)
    return out


def canonical_2d(a: np.ndarray) -> np.ndarray:
    """(O, I, *kernel) -> (O, prod(kernel) * I), input channel fastest, by explicit indexing."""
    if a.ndim == 2:
        return a.copy()
    o, i = a.shape[:2]
    kernel = a.shape[2:]
    positions = list(np.ndindex(*kernel))
    out = np.empty((o, len(positions) * i), dtype=a.dtype)
    for oo in range(o):
        for p, pos in enumerate(positions):
            for ii in range(i):
                out[oo, p * i + ii] = a[(oo, ii) + pos]
    return out
