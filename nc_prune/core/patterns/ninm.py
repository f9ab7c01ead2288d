"""``N:M`` patterns, counted as INC counts them: N of every M consecutive input weights are **pruned**.

So ``"2:4"`` keeps 2 of every 4 (50 % sparse), and ``"1:4"`` keeps 3 of 4 (25 %). Some tools (NVIDIA's
"2:4 sparsity", PyTorch's semi-structured) count N as the weights *kept*; for 2:4 the two agree, for
other ratios they do not: nc_prune ``"1:4"`` is their "3:4".

Groups are M consecutive columns of the canonical 2-D view — consecutive input channels at one kernel
position for a conv. A group's score is the reduction (mean, sum or max) of its N lowest scores. With a
target below N/M only the lowest-scored groups are N:M-pruned, the others stay dense.

Worked example, ``"2:4"`` on one row, target 0.5::

    scores = [0.9, 0.1, 0.4, 0.2 | 0.3, 0.8, 0.7, 0.6]
    group 0 drops its 2 lowest (0.1, 0.2) → keep [1, 0, 1, 0]
    group 1 drops its 2 lowest (0.3, 0.6) → keep [0, 1, 1, 0]

With target 0.25 only one group is pruned: the one whose two lowest average less (group 0: 0.15).
"""

from __future__ import annotations

from functools import reduce as _fold
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..arrays import from_2d, to_2d
from ..config import parse_pattern
from ..errors import PatternShapeError
from ..registry import register_pattern
from .. import selection
from .base import REDUCERS, Decide, LayerUnits, Pattern
from .nxm import _check_ndim

_UINT = {1: np.uint8, 4: np.uint32, 8: np.uint64}


def _swap_rows(x: np.ndarray, a: int, b: int, where: np.ndarray) -> None:
    """Swap ``x[a]`` and ``x[b]`` where ``where`` is True, branch-free (xor through an all-ones mask)."""
    u = _UINT[x.dtype.itemsize]
    xa, xb = x[a].view(u), x[b].view(u)
    d = (xa ^ xb) & (0 - where.astype(u))
    xa ^= d
    xb ^= d


class GroupUnits(LayerUnits):
    """Groups of ``M`` consecutive columns, ``N`` of which go when the group is pruned."""

    def __init__(self, shape: Tuple[int, ...], n: int, m: int) -> None:
        self.shape = shape
        self.rows = shape[0]
        self.cols = int(np.prod(shape[1:]))
        self.n, self.m = n, m
        self.n_units = self.rows * (self.cols // m)
        self.unit_size = n
        self.ratio_scale = m / n
        self._lowest: Optional[np.ndarray] = None

    def _groups(self, a: np.ndarray) -> np.ndarray:
        return to_2d(a).reshape(-1, self.m)

    def _n_lowest(self, g: np.ndarray, keep: Optional[np.ndarray], where: bool):
        """The N lowest scores of each group (pruned weights first, ties to the lower position), in that order.

        Returns the N scores (N arrays, one entry per group, or a ``(groups, N)`` array) and, when ``where``,
        a ``(groups, M)`` boolean of their positions. Floats without NaN take a bubble network over the M
        columns (N passes): min/max when no weight of the piece is pruned yet, else branch-free swaps that
        carry the scores and positions along. Anything else takes a stable argsort. All give the same order.
        """
        if keep is not None and keep.all() and not np.isneginf(g).any():
            keep = None  # nothing pruned in this piece and no -inf to rank: the mask changes no order
        key = g
        if keep is not None:  # pruned weights go first, ahead of a score of -inf passed in (ranked as the lowest finite)
            key = np.where(keep, np.maximum(g, np.finfo(g.dtype).min) if np.issubdtype(g.dtype, np.floating) else g,
                           -np.inf)
        if key.dtype not in (np.float32, np.float64) or key.dtype != g.dtype or np.isnan(key).any():
            lowest = np.argsort(key, axis=-1, kind="stable")[:, : self.n]
            sel = None
            if where:
                sel = np.zeros(g.shape, dtype=bool)
                np.put_along_axis(sel, lowest, True, axis=-1)
            return np.take_along_axis(g, lowest, axis=-1), sel
        k = key.T.copy()  # a copy even when the transpose is already contiguous (one group)
        if keep is None:  # the scores are the keys: min/max is the swap, positions follow from the N-th value
            for r in range(self.n):
                for b in range(self.m - 1, r, -1):
                    lo = np.minimum(k[b - 1], k[b])
                    np.maximum(k[b - 1], k[b], out=k[b])
                    k[b - 1] = lo
            return [k[r] for r in range(self.n)], self._positions(key, k[self.n - 1]) if where else None
        v = g.T.copy()
        pos = np.repeat(np.arange(self.m, dtype=np.uint8)[:, None], g.shape[0], axis=1) if where else None
        for r in range(self.n):
            for b in range(self.m - 1, r, -1):
                swap = k[b] < k[b - 1]  # strict: equal keys keep their order (stable)
                for x in (k, v) if pos is None else (k, v, pos):
                    _swap_rows(x, b - 1, b, swap)
        sel = None
        if where:
            sel = np.zeros(g.shape, dtype=bool)
            for r in range(self.n):
                for i in range(self.m):
                    sel[:, i] |= pos[r] == i
        return [v[r] for r in range(self.n)], sel

    def _positions(self, key: np.ndarray, nth: np.ndarray) -> np.ndarray:
        """Where each group's N lowest keys are, given the N-th lowest: all below it, then ties left to right."""
        cols = key.T
        less = [c < nth for c in cols]
        need = self.n - _fold(np.add, less[1:], less[0].astype(np.uint8))
        seen = np.zeros_like(need)
        sel = np.empty(cols.shape, dtype=bool)
        for i, c in enumerate(cols):
            tie = c == nth
            np.logical_or(less[i], tie & (seen < need), out=sel[i])
            seen += tie
        return sel.T

    def _reduce(self, vals, reduce_type: str) -> np.ndarray:
        """``REDUCERS[reduce_type]`` over each group's N values, bit for bit (numpy sums up to 7 in order)."""
        if not isinstance(vals, list):
            return REDUCERS[reduce_type](vals, axis=-1)
        if reduce_type == "max":
            return _fold(np.maximum, vals[1:], vals[0].copy())
        if self.n > 2:
            return REDUCERS[reduce_type](np.stack(vals, axis=-1), axis=-1)
        total = vals[0] + vals[1] if self.n == 2 else vals[0].copy()
        if reduce_type == "mean":
            np.true_divide(total, np.intp(self.n), out=total, casting="unsafe")  # as np.mean divides
        return total

    def _pieces(self, score: np.ndarray, keep: Optional[np.ndarray], where: bool) -> Iterator[tuple]:
        """Per piece of whole rows: (rows, unit scores, already pruned, positions of the N lowest)."""
        step = max(1, selection.PIECE // self.cols)  # about PIECE weights: the network copies them M-wide
        for r in range(0, self.rows, step):
            rows = slice(r, r + step)
            g = self._groups(score[rows])
            kg = None if keep is None else self._groups(keep[rows])
            vals, sel = self._n_lowest(g, kg, where)
            done = None if kg is None else np.count_nonzero(~kg, axis=-1) >= self.n
            yield rows, vals, done, sel

    def score_pieces(self, score, reduce_type, keep):
        for _, vals, done, _ in self._pieces(score, keep, False):
            yield self._reduce(vals, reduce_type), done

    def prune_mask(self, score, reduce_type, keep, decide: Decide) -> np.ndarray:
        out = np.empty(self.shape, dtype=bool)
        for rows, vals, done, sel in self._pieces(score, keep, True):
            sel &= decide(self._reduce(vals, reduce_type), done)[:, None]
            part = out[rows]
            part[...] = from_2d(sel.reshape(part.shape[0], self.cols), part.shape)
        return out

    def reduce(self, score, reduce_type, keep):
        parts, sels = [], []
        for _, vals, _, sel in self._pieces(np.asarray(score), keep, True):
            parts.append(self._reduce(vals, reduce_type))
            sels.append(sel)
        self._lowest = np.concatenate(sels)
        return np.concatenate(parts)

    def already_pruned(self, keep):
        return np.count_nonzero(~self._groups(keep), axis=-1) >= self.n

    def expand(self, prune_units):
        if self._lowest is None:
            raise RuntimeError("GroupUnits.expand called before reduce")
        out = self._lowest & prune_units[:, None]
        return from_2d(out.reshape(self.rows, self.cols), self.shape).copy()

    def block_size(self) -> List[int]:
        return [1, self.m]


@register_pattern("N:M")
class PatternNInM(Pattern):
    """N of every M consecutive input weights pruned (INC's ``PatternNInM``).

    Attributes:
        N: weights pruned per group.
        M: group size.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        kind, sizes = parse_pattern(self.pattern)
        if kind != "N:M":
            raise PatternShapeError(f"PatternNInM got pattern {self.pattern!r}; use get_pattern() to dispatch")
        self.N, self.M = sizes

    def units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        shape = tuple(int(s) for s in shape)
        _check_ndim(name, shape, self.pattern)
        cols = int(np.prod(shape[1:]))
        if cols % self.M:
            raise PatternShapeError(
                f"layer {name!r} with weight shape {shape} (2-D view {shape[0]}x{cols}) does not fit pattern "
                f"{self.pattern!r}: needs columns % {self.M} == 0"
            )
        return GroupUnits(shape, self.N, self.M)
