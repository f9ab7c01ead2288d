"""``NxM`` block patterns: A output rows × B input columns of the canonical 2-D view.

The 2-D view of a weight ``(O, I, *kernel)`` is ``(O, prod(kernel)·I)`` with the input channel fastest,
so a Linear weight is used as stored and a conv filter bank is read position by position.

* ``"4x1"``: 4 consecutive output rows of one column — ``O % 4 == 0`` is required.
* ``"1x1"``: unstructured.
* ``"1xchannel"``: one whole output row — for a conv, one whole filter; ``"Nxchannel"``: N consecutive ones.
* ``"channelx1"``: one whole input channel — for a conv, that channel at every kernel position of every
  filter (``O · prod(kernel)`` weights); ``"channelxM"``: M consecutive input channels.

Worked example, ``"2x1"`` on a 4×2 weight with magnitude scores, target 0.5::

    W = [[9, 1],        block scores (mean |W|)     prune the 2 lowest
         [8, 1],   →    [[8.5, 1.0],          →     keep = [[1, 0],
         [1, 7],         [1.0, 7.5]]                        [1, 0],
         [1, 7]]                                            [0, 1],
                                                            [0, 1]]
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..arrays import from_2d, to_2d
from ..config import parse_pattern
from ..errors import PatternShapeError
from ..registry import register_pattern
from .. import selection
from ..parameters import Param, choice
from .base import REDUCERS, Decide, LayerUnits, Pattern


def _check_ndim(name: str, shape: Tuple[int, ...], pattern: str) -> None:
    if len(shape) < 2:
        raise PatternShapeError(
            f"layer {name!r} has weight shape {shape}; pattern {pattern!r} needs at least 2 dimensions "
            f"(out, in, *kernel)"
        )


class BlockUnits(LayerUnits):
    """Rectangular ``bh × bw`` blocks of the 2-D view."""

    def __init__(self, shape: Tuple[int, ...], bh: int, bw: int) -> None:
        self.shape = shape
        self.rows = shape[0]
        self.cols = int(np.prod(shape[1:]))
        self.bh, self.bw = bh, bw
        self.grid = (self.rows // bh, self.cols // bw)
        self.n_units = self.grid[0] * self.grid[1]
        self.unit_size = bh * bw

    def _blocks(self, a: np.ndarray) -> np.ndarray:
        """``(block rows, bh, block cols, bw)`` view of whole block-rows of the weight (``a`` may be a row slice)."""
        return to_2d(a).reshape(-1, self.bh, self.grid[1], self.bw)

    def _reduce(self, score: np.ndarray, reduce_type: str) -> np.ndarray:
        b = self._blocks(score)
        if self.unit_size == 1:
            return b.reshape(-1)
        return REDUCERS[reduce_type](b, axis=(1, 3)).reshape(-1)

    def _pruned(self, keep: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return None if keep is None else ~self._blocks(keep).any(axis=(1, 3)).reshape(-1)

    def _expand(self, prune_units: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        g = prune_units.reshape(-1, 1, self.grid[1], 1)
        full = np.broadcast_to(g, (g.shape[0], self.bh, self.grid[1], self.bw)).reshape(shape[0], self.cols)
        return from_2d(full, shape)

    def _row_slices(self) -> Iterator[slice]:
        """Whole block-rows, about ``PIECE`` units at a time."""
        step = max(1, selection.PIECE // self.grid[1]) * self.bh
        return (slice(r, r + step) for r in range(0, self.rows, step))

    def reduce(self, score, reduce_type, keep):
        return self._reduce(np.asarray(score), reduce_type)

    def already_pruned(self, keep):
        return self._pruned(keep)

    def expand(self, prune_units):
        return self._expand(prune_units, self.shape).copy()

    def score_pieces(self, score, reduce_type, keep):
        for rows in self._row_slices():
            yield self._reduce(score[rows], reduce_type), self._pruned(None if keep is None else keep[rows])

    def prune_mask(self, score, reduce_type, keep, decide: Decide) -> np.ndarray:
        out = np.empty(self.shape, dtype=bool)
        for rows, (units, done) in zip(self._row_slices(), self.score_pieces(score, reduce_type, keep)):
            part = out[rows]
            part[...] = self._expand(decide(units, done), part.shape)
        return out

    def block_size(self) -> List[int]:
        return [self.bh, self.bw]


class InputChannelUnits(LayerUnits):
    """Groups of ``group`` consecutive whole input channels: for a conv, those channels at every kernel
    position of every filter (``"channelx1"``: one channel; ``"channelxM"``: M consecutive ones)."""

    def __init__(self, shape: Tuple[int, ...], group: int = 1) -> None:
        self.shape = shape
        self.out, self.inp = shape[0], shape[1]
        self.positions = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        self.group = group
        self.n_units = self.inp // group
        self.unit_size = self.out * self.positions * group

    def _view(self, a: np.ndarray) -> np.ndarray:
        return to_2d(a).reshape(self.out, self.positions, self.n_units, self.group)

    def reduce(self, score, reduce_type, keep):
        return REDUCERS[reduce_type](self._view(np.asarray(score)), axis=(0, 1, 3))

    def already_pruned(self, keep):
        return ~self._view(keep).any(axis=(0, 1, 3))

    def expand(self, prune_units):
        full = np.broadcast_to(prune_units.reshape(1, 1, -1, 1), (self.out, self.positions, self.n_units, self.group))
        return from_2d(full.reshape(self.out, -1), self.shape).copy()

    def block_size(self) -> List[int]:
        return [self.out, self.group] if self.positions == 1 else [self.out, -1]


@register_pattern("NxM")
class PatternNxM(Pattern):
    """Blocks of ``N`` output rows × ``M`` input columns (INC's ``PatternNxM``).

    Attributes:
        block_size: ``[N, M]``; a side may be the string ``"channel"``.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        kind, sizes = parse_pattern(self.pattern)
        if kind != "NxM":
            raise PatternShapeError(f"PatternNxM got pattern {self.pattern!r}; use get_pattern() to dispatch")
        self.block_size = list(sizes)

    COUPLED = {"coupled": Param("auto", choice("auto", True, False),
                                "channel patterns: prune a channel with the layers that share it (the up/gate rows and "
                                "the down column of an FFN, a filter and its readers). 'auto': when the group did not "
                                "select those layers itself; True: always; False: never (the selected layer alone, INC)")}

    @classmethod
    def declared_parameters(cls, resolved) -> dict:
        """``coupled`` for the channel patterns ``1xchannel`` / ``channelx1``; nothing for blocks."""
        pattern = resolved.get("pattern", "")
        return dict(cls.COUPLED) if pattern in ("1xchannel", "channelx1") else {}

    def prunes_coupling(self, coupling, selected) -> bool:
        """Channels across layers: ``1xchannel`` on a layer writing them (a producer's rows), ``channelx1`` on one
        reading them (a consumer's input channels). By default (``coupled="auto"``) only when the group did not
        select the layers on the other side itself — INC's FFN recipe (``channelx1`` on the down projection
        alone) brings the up projection in; a group taking every layer keeps INC's per-layer channels."""
        mode = self.config.get("parameters", {}).get("coupled", "auto")
        side = {(1, "channel"): "out", ("channel", 1): "in"}.get(tuple(self.block_size))
        if mode is False or side is None or coupling.kind != "channel":
            return False
        mine = {s.layer for s in coupling.slices if s.axis == side}
        if not mine & set(selected):
            return False
        return mode is True or not (set(coupling.layers) - mine) & set(selected)

    def units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        shape = tuple(int(s) for s in shape)
        _check_ndim(name, shape, self.pattern)
        bh, bw = self.block_size
        if bh == "channel":
            if shape[1] % bw:
                raise PatternShapeError(
                    f"layer {name!r} with weight shape {shape} has {shape[1]} input channels, which pattern "
                    f"{self.pattern!r} cannot split into groups of {bw}: needs in % {bw} == 0"
                )
            return InputChannelUnits(shape, bw)
        cols = int(np.prod(shape[1:]))
        if bw == "channel":
            bw = cols
        if shape[0] % bh or cols % bw:
            raise PatternShapeError(
                f"layer {name!r} with weight shape {shape} (2-D view {shape[0]}x{cols}) does not fit pattern "
                f"{self.pattern!r}: needs out % {bh} == 0 and columns % {bw} == 0"
            )
        return BlockUnits(shape, bh, bw)


@register_pattern("inc_channelx1")
@register_pattern("inc_1xchannel")
class PatternINCChannel(Pattern):
    """INC's ``channelx1`` / ``1xchannel`` exactly as INC pruned convolutions, for configs that must match it.

    INC took the block size from the raw ``(O, I, kh, kw)`` shape: ``channelx1`` became ``O x 1`` blocks and
    ``1xchannel`` ``1 x I`` blocks of the ``(O, kh·kw·I)`` view, so on a conv its "channel" is one input
    channel at *one kernel position* (``inc_channelx1``) or one filter's I inputs at one kernel position
    (``inc_1xchannel``) — not nc_prune's whole input channel or whole filter. On Linear layers both equal
    ``channelx1`` and ``1xchannel``. Worked example, a conv of 2 filters, 3 input channels, 2x2 kernel
    (12 columns, input fastest): ``inc_channelx1`` has 12 units of 2 weights, ``channelx1`` 3 units of 8.
    """

    def units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        shape = tuple(int(s) for s in shape)
        _check_ndim(name, shape, self.pattern)
        return BlockUnits(shape, shape[0], 1) if self.pattern == "inc_channelx1" else BlockUnits(shape, 1, shape[1])
