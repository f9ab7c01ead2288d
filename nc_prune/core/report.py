"""Sparsity reports: per layer and total, as data and as a table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: Tuple[int, ...]
    params: int
    zeros: int
    pattern: str = "-"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.zeros / self.params if self.params else 0.0


class SparsityReport:
    """Rows of :class:`LayerSparsity` plus totals. ``str(report)`` is a table; ``to_dict()`` is data."""

    def __init__(self, rows: Iterable[LayerSparsity]) -> None:
        self.rows: List[LayerSparsity] = list(rows)

    @classmethod
    def from_arrays(cls, weights: Dict[str, Any], patterns: Optional[Dict[str, str]] = None,
                    notes: Optional[Dict[str, str]] = None) -> "SparsityReport":
        """Rows from ``{layer: weight}`` (canonical layout), the pattern of each pruned layer and a note on the
        others (why the selection left them dense)."""
        patterns, notes = patterns or {}, notes or {}
        rows = []
        for name, w in weights.items():
            a = np.asarray(w)
            rows.append(LayerSparsity(name, tuple(a.shape), int(a.size), int(a.size - np.count_nonzero(a)),
                                      patterns.get(name, "-"), "" if name in patterns else notes.get(name, "")))
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

    def __getitem__(self, name: str) -> LayerSparsity:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r} in the report; layers: {', '.join(r.name for r in self.rows)}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "layers": [dict(asdict(r), shape=list(r.shape), ratio=r.ratio) for r in self.rows],
            "total": {"params": self.total_params, "zeros": self.total_zeros, "ratio": self.total_ratio},
        }

    def __str__(self) -> str:
        noted = any(r.note for r in self.rows)
        head = ("layer", "shape", "params", "zeros", "sparsity", "pattern") + (("note",) if noted else ())
        body = [(r.name, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.zeros:,}", f"{r.ratio:.2%}", r.pattern)
                + ((r.note,) if noted else ()) for r in self.rows]
        body.append(("total", "", f"{self.total_params:,}", f"{self.total_zeros:,}", f"{self.total_ratio:.2%}", "")
                    + (("",) if noted else ()))
        widths = [max(len(str(row[i])) for row in [head] + body) for i in range(len(head))]
        right = {2, 3, 4}

        def fmt(row):
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(head), rule] + [fmt(r) for r in body[:-1]] + [rule, fmt(body[-1])])

    def __repr__(self) -> str:
        return f"SparsityReport({len(self.rows)} layers, {self.total_ratio:.2%} sparse)"
