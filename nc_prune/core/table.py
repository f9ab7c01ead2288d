"""The one plain-text table every printed report uses: the sparsity report, the CLI's tables, the demo's summary.

>>> print(format_table(("layer", "zeros"), [("fc1", "1,024"), ("fc2", "8")], right={1}, footer=("total", "1,032")))
layer  zeros
-----  -----
fc1    1,024
fc2        8
-----  -----
total  1,032
"""

from __future__ import annotations

from typing import Collection, Optional, Sequence


def format_table(head: Sequence[str], rows: Sequence[Sequence[object]], right: Collection[int] = (),
                 footer: Optional[Sequence[object]] = None) -> str:
    """Columns under a header and a rule, two spaces apart, trailing blanks trimmed.

    Args:
        head: the column titles.
        rows: the body, one sequence of cells per row (cells are ``str()``-ed).
        right: indices of the columns aligned to the right (numbers); the others align left.
        footer: a last row (a total) set apart by a second rule.
    """
    body = [[str(c) for c in row] for row in rows]
    last = [str(c) for c in footer] if footer is not None else None
    every = [list(head), *body] + ([last] if last is not None else [])
    widths = [max(len(r[i]) for r in every) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [fmt(head), rule] + [fmt(r) for r in body]
    if last is not None:
        lines += [rule, fmt(last)]
    return "\n".join(lines)
