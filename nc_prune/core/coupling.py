"""Units that span layers: an attention head, an FFN channel, a conv filter with everything that reads it.

Pruning a head for real means removing rows of q, k and v and columns of o together; an FFN channel is a
row of ``up`` (and ``gate``) and a column of ``down``; a conv filter is a row of its conv, its BatchNorm
entry, and the input channel of every layer that reads it (across residual additions too). A
:class:`Coupling` names those pieces once, as :class:`Slice` s of layers in the canonical layout; unit ``u``
of a coupling is slice ``u`` of every member. Selection then treats a coupling as one "layer" whose unit
score reduces every member's scores over its slice, so global and local scope, per-layer bounds,
schedules and every criterion work on heads and channels unchanged — and the masks it returns zero the
whole unit in every member, which is what slimming removes.

>>> import numpy as np
>>> c = Coupling("ffn", "channel", 4, (Slice("up", "out", 1), Slice("down", "in", 1)))
>>> cu = CoupledUnits(c, {"up": (4, 3), "down": (2, 4)})
>>> scores = {"up": np.array([[1., 1, 1], [9, 9, 9], [2, 2, 2], [8, 8, 8]]), "down": np.ones((2, 4))}
>>> cu.reduce(scores, "sum", None).tolist()          # row u of up + column u of down
[5.0, 29.0, 8.0, 26.0]
>>> prune = cu.expand(np.array([True, False, False, False]))
>>> prune["up"][0].all() and prune["down"][:, 0].all() and int(prune["up"].sum() + prune["down"].sum())
5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .arrays import to_2d
from .errors import PatternShapeError

AXES = ("out", "in")


@dataclass(frozen=True)
class Slice:
    """A layer's share of each unit of a coupling.

    Attributes:
        layer: the layer's name.
        axis: ``"out"`` — rows of the canonical 2-D view (output channels); ``"in"`` — input channels
            (canonical dimension 1, at every kernel position).
        width: rows or channels per unit (a head's ``head_dim``; 1 for a channel).
        offset: the first row or channel of unit 0 (GPT-2's fused ``c_attn`` holds q, k and v at three offsets).
        scored: whether the slice's scores count in the unit's score (its mask applies either way).
    """

    layer: str
    axis: str
    width: int = 1
    offset: int = 0
    scored: bool = True

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"Slice axis must be one of {AXES}, got {self.axis!r}")


@dataclass(frozen=True)
class Coupling:
    """``units`` units, each made of slice ``u`` of every member.

    Attributes:
        name: how reports and errors call it (``"model.layers.0.self_attn heads"``).
        kind: ``"head"`` or ``"channel"`` (which patterns use it).
        units: how many units.
        slices: the members.
        anchor: the layers whose selection by a group brings the coupling in (default: every member).
    """

    name: str
    kind: str
    units: int
    slices: Tuple[Slice, ...]
    anchor: Tuple[str, ...] = ()

    @property
    def layers(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(s.layer for s in self.slices))

    @property
    def anchors(self) -> Tuple[str, ...]:
        return self.anchor or self.layers


def _along(a: np.ndarray, s: Slice, units: int) -> np.ndarray:
    """``a`` (the layer's array) as ``(units, ...)``: the entries of each unit's slice, flattened."""
    if s.axis == "out":
        rows = to_2d(a)[s.offset: s.offset + units * s.width]
        return rows.reshape(units, -1)
    inp = a.shape[1]
    view = np.moveaxis(a, 1, 0).reshape(inp, -1)[s.offset: s.offset + units * s.width]
    return view.reshape(units, -1)


class CoupledUnits:
    """The units of one :class:`Coupling` over its members' shapes — the coupled counterpart of ``LayerUnits``.

    Raises:
        PatternShapeError: a member is missing or too small for the coupling's slices.
    """

    def __init__(self, coupling: Coupling, shapes: Mapping[str, Tuple[int, ...]]) -> None:
        self.coupling = coupling
        self.shapes = {}
        for s in coupling.slices:
            shape = shapes.get(s.layer)
            if shape is None:
                raise PatternShapeError(f"{coupling.name}: member layer {s.layer!r} is not among the layers given")
            size = shape[0] if s.axis == "out" else shape[1]
            if s.offset + coupling.units * s.width > size:
                raise PatternShapeError(
                    f"{coupling.name}: layer {s.layer!r} with shape {tuple(shape)} has {size} "
                    f"{'rows' if s.axis == 'out' else 'input channels'}, fewer than {coupling.units} units of "
                    f"{s.width} from {s.offset}"
                )
            self.shapes[s.layer] = tuple(int(v) for v in shape)
        self.n_units = coupling.units
        self.unit_size = sum(int(np.prod(_along(np.empty(self.shapes[s.layer], dtype=bool), s, self.n_units)
                                         .shape[1:])) for s in coupling.slices)
        self.ratio_scale = 1.0

    @property
    def layers(self) -> Tuple[str, ...]:
        return self.coupling.layers

    @property
    def weights(self) -> int:
        """Weights of the member layers (what a global target is a fraction of)."""
        return sum(int(np.prod(shape)) for shape in self.shapes.values())

    def reduce(self, scores: Mapping[str, np.ndarray], reduce_type: str,
               keep: Optional[Mapping[str, np.ndarray]], slices: Optional[Sequence[Slice]] = None) -> np.ndarray:
        """One score per unit over every scored slice (or over ``slices``): the sum, mean or max of its entries."""
        slices = [s for s in self.coupling.slices if s.scored] if slices is None else slices
        parts = [_along(np.asarray(scores[s.layer], dtype=np.float64), s, self.n_units) for s in slices]
        if reduce_type == "max":
            return np.max(np.concatenate(parts, axis=1), axis=1)
        total = sum(p.sum(axis=1) for p in parts)
        return total / sum(p.shape[1] for p in parts) if reduce_type == "mean" else total

    def already_pruned(self, keep: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per unit: pruned in every member (all of its slices' entries masked)."""
        out = np.ones(self.n_units, dtype=bool)
        for s in self.coupling.slices:
            if s.layer in keep:
                out &= ~_along(np.asarray(keep[s.layer], dtype=bool), s, self.n_units).any(axis=1)
        return out

    def expand(self, prune_units: np.ndarray) -> Dict[str, np.ndarray]:
        """``{layer: element prune mask}`` of every member from a per-unit prune mask."""
        out = {layer: np.zeros(shape, dtype=bool) for layer, shape in self.shapes.items()}
        units = np.flatnonzero(prune_units)
        for s in self.coupling.slices:
            self._put(out[s.layer], s, units, True)
        return out

    def spread(self, values: np.ndarray, slices: Optional[Sequence[Slice]] = None) -> Dict[str, np.ndarray]:
        """``{layer: float array}`` with unit ``u``'s value on every entry of its scored slices (or of ``slices``)
        and 0 elsewhere: per-unit scores as element scores whose mean or max over a unit is the unit's value."""
        slices = [s for s in self.coupling.slices if s.scored] if slices is None else slices
        out = {layer: np.zeros(shape, dtype=np.float64) for layer, shape in self.shapes.items()}
        units = np.arange(self.n_units)
        for s in slices:
            self._put(out[s.layer], s, units, np.asarray(values, dtype=np.float64))
        return out

    def _put(self, a: np.ndarray, s: Slice, units: np.ndarray, value: Any) -> None:
        """Write ``value`` (a scalar, or one per unit of ``units``) on the entries of those units' slice ``s``."""
        per_unit = np.ndim(value) > 0
        view = _along(a, s, self.n_units)  # a view into ``a`` where the axes allow
        if np.shares_memory(view, a):
            view[units] = np.asarray(value)[:, None] if per_unit else value
            return
        for i, u in enumerate(units):
            lo, hi = s.offset + u * s.width, s.offset + (u + 1) * s.width
            v = value[i] if per_unit else value
            if s.axis == "out":
                a[lo:hi] = v
            else:
                a[:, lo:hi] = v


def check_couplings(couplings: Sequence[Coupling]) -> List[str]:
    """Problems that make couplings unusable together (a layer slice claimed twice): messages, empty if fine."""
    seen: Dict[Tuple[str, str], str] = {}
    problems = []
    for c in couplings:
        for s in c.slices:
            key = (s.layer, s.axis)
            if key in seen and seen[key] != c.name and s.scored:
                problems.append(f"{s.layer} ({s.axis}) belongs to both {seen[key]} and {c.name}")
            seen.setdefault(key, c.name)
    return problems


def layer_units_pruned(keep: np.ndarray, spec: Mapping) -> Tuple[int, int]:
    """``(pruned, total)`` units of a coupling as one member layer's keep-mask shows them.

    ``spec`` is what a plan record keeps for a coupled layer: ``{"units": n, "slices": [[axis, width, offset],
    ...]}`` (the member's slices); a unit counts as pruned when all of its entries are masked in this layer.
    """
    units = int(spec["units"])
    pruned = np.ones(units, dtype=bool)
    for axis, width, offset in spec["slices"]:
        pruned &= ~_along(np.asarray(keep, dtype=bool), Slice("", axis, int(width), int(offset)), units).any(axis=1)
    return int(pruned.sum()), units


def member_specs(couplings: Sequence[Coupling]) -> Dict[str, Dict]:
    """``{layer: spec}`` for every member layer of the couplings (see :func:`layer_units_pruned`)."""
    out: Dict[str, Dict] = {}
    for c in couplings:
        for s in c.slices:
            spec = out.setdefault(s.layer, {"coupling": c.name, "units": c.units, "slices": []})
            spec["slices"].append([s.axis, s.width, s.offset])
    return out
