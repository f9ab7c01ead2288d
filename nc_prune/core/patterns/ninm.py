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

from typing import List, Tuple

import numpy as np

from ..arrays import from_2d, to_2d
from ..config import parse_pattern
from ..errors import PatternShapeError
from ..registry import register_pattern
from .base import REDUCERS, LayerUnits, Pattern
from .nxm import _check_ndim


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
        self._lowest = None

    def _groups(self, a: np.ndarray) -> np.ndarray:
        return to_2d(a).reshape(-1, self.m)

    def reduce(self, score, reduce_type, keep):
        g = self._groups(np.asarray(score))
        if keep is not None:
            # weights already pruned are the first to go in their group, so pruned positions persist
            # (ahead of any score of -inf passed in, which ranks as the lowest finite value)
            if np.issubdtype(g.dtype, np.floating):
                g = np.maximum(g, np.finfo(g.dtype).min)
            g = np.where(self._groups(keep), g, -np.inf)
        lowest = np.argsort(g, axis=-1, kind="stable")[:, : self.n]
        self._lowest = lowest
        vals = np.take_along_axis(self._groups(np.asarray(score)), lowest, axis=-1)
        return REDUCERS[reduce_type](vals, axis=-1)

    def already_pruned(self, keep):
        return np.count_nonzero(~self._groups(keep), axis=-1) >= self.n

    def expand(self, prune_units):
        if self._lowest is None:
            raise RuntimeError("GroupUnits.expand called before reduce")
        out = np.zeros((self.n_units, self.m), dtype=bool)
        np.put_along_axis(out, self._lowest, prune_units[:, None], axis=-1)
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
