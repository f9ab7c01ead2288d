"""Sparsity reports: per layer and total, as data and as a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .coupling import layer_units_pruned
from .patterns.base import get_pattern
from .table import format_table


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: Tuple[int, ...]
    params: int
    zeros: int
    pattern: str = "-"
    note: str = ""
    units: int = 0
    pruned_units: int = 0

    @property
    def ratio(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    @property
    def unit_ratio(self) -> float:
        """Fraction of the pattern's units pruned (a unit counts when its mask prunes it; 0 without a mask)."""
        return self.pruned_units / self.units if self.units else 0.0


class SparsityReport:
    """Rows of :class:`LayerSparsity` plus totals. ``str(report)`` is a table; ``to_dict()`` is data."""

    def __init__(self, rows: Iterable[LayerSparsity]) -> None:
        self.rows: List[LayerSparsity] = list(rows)

    @classmethod
    def from_arrays(cls, weights: Dict[str, Any], patterns: Optional[Dict[str, str]] = None,
                    notes: Optional[Dict[str, str]] = None, masks: Optional[Dict[str, Any]] = None,
                    coupled: Optional[Dict[str, Dict]] = None) -> "SparsityReport":
        """Rows from ``{layer: weight}`` (canonical layout), the pattern of each pruned layer, a note on the
        others (why the selection left them dense) and, from ``masks`` (canonical keep-masks), how many of
        each pruned layer's units are pruned — the ratio a unit-counting target (INC's) speaks of. A layer in
        ``coupled`` (a coupling's member spec, see :func:`~nc_prune.core.coupling.member_specs`) counts the
        coupling's units — heads, channels — as its mask shows them."""
        patterns, notes, masks, coupled = patterns or {}, notes or {}, masks or {}, coupled or {}
        rows = []
        for name, w in weights.items():
            a = np.asarray(w)
            units = pruned = 0
            if name in masks and name in coupled:
                pruned, units = layer_units_pruned(masks[name], coupled[name])
            elif name in masks and name in patterns:
                lu = get_pattern({"pattern": patterns[name]}).layer_units(name, a.shape)
                units, pruned = lu.n_units, int(np.count_nonzero(lu.already_pruned(np.asarray(masks[name], bool))))
            rows.append(LayerSparsity(name, tuple(a.shape), int(a.size), int(a.size - np.count_nonzero(a)),
                                      patterns.get(name, "-"), "" if name in patterns else notes.get(name, ""),
                                      units, pruned))
        return cls(rows)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_zeros(self) -> int:
        return sum(r.zeros for r in self.rows)

    @property
    def total_ratio(self) -> float:
        return self.total_zeros / self.total_params if self.total_params else 0.0

    @property
    def total_unit_ratio(self) -> float:
        """Pruned units over all units of the layers whose units are known (see :attr:`LayerSparsity.unit_ratio`)."""
        units = sum(r.units for r in self.rows)
        return sum(r.pruned_units for r in self.rows) / units if units else 0.0

    def __getitem__(self, name: str) -> LayerSparsity:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r} in the report; layers: {', '.join(r.name for r in self.rows)}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "layers": [dict(asdict(r), shape=list(r.shape), ratio=r.ratio, unit_ratio=r.unit_ratio) for r in self.rows],
            "total": {"params": self.total_params, "zeros": self.total_zeros, "ratio": self.total_ratio,
                      "unit_ratio": self.total_unit_ratio},
        }

    def __str__(self) -> str:
        noted = any(r.note for r in self.rows)
        counted = any(r.units for r in self.rows)
        head = ("layer", "shape", "params", "zeros", "sparsity", "pattern") + (("units",) if counted else ()) \
            + (("note",) if noted else ())

        def units(pruned: int, total: int, ratio: float) -> Tuple[str, ...]:
            return ((f"{pruned:,}/{total:,} ({ratio:.1%})" if total else ""),) if counted else ()

        body = [(r.name, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.zeros:,}", f"{r.ratio:.2%}", r.pattern)
                + units(r.pruned_units, r.units, r.unit_ratio) + ((r.note,) if noted else ()) for r in self.rows]
        body.append(("total", "", f"{self.total_params:,}", f"{self.total_zeros:,}", f"{self.total_ratio:.2%}", "")
                    + units(sum(r.pruned_units for r in self.rows), sum(r.units for r in self.rows),
                            self.total_unit_ratio) + (("",) if noted else ()))
        right = {2, 3, 4} | ({6} if counted else set())
        return format_table(head, body[:-1], right=right, footer=body[-1])

    def __repr__(self) -> str:
        return f"SparsityReport({len(self.rows)} layers, {self.total_ratio:.2%} sparse)"
