"""Which weights a one-shot method prunes: exactly the asked number in each output row, or N of every M.

Both papers compare weights within each output row (SparseGPT within each column block of a row), so the
unit of selection here is a row of the canonical 2-D view ``(out, in)``: ``"1x1"`` prunes
``floor(in × sparsity)`` weights of every row, and ``"N:M"`` the N lowest of every M consecutive inputs.
Ties go to the lower column (stable sorts), so numpy and torch give the same masks on the same scores.

>>> import numpy as np
>>> row_prune_mask(np.array([[3., 1., 2., 1.]]), 2).astype(int).tolist()
[[0, 1, 0, 1]]
>>> nm_prune_mask(np.array([[3., 1., 2., 0., 5., 4., 6., 7.]]), 2, 4).astype(int).tolist()
[[0, 1, 0, 1, 1, 1, 0, 0]]
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ..selection import count_for_ratio
from ..xp import namespace


def row_prune_mask(scores: Any, count: int) -> Any:
    """True at the ``count`` lowest scores of each row of a 2-D array (ties: the lower column)."""
    ns = namespace(scores)
    return ns.mark_first(ns.argsort_stable(scores), count, scores.shape)


def nm_prune_mask(scores: Any, n: int, m: int) -> Any:
    """True at the ``n`` lowest of every ``m`` consecutive columns of each row (ties: the lower column)."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    ns = namespace(scores)
    return ns.mark_first(ns.argsort_stable(groups), n, groups.shape).reshape(rows, cols)


def prune_mask(scores: Any, sparsity: float, nm: Optional[Tuple[int, int]]) -> Any:
    """:func:`nm_prune_mask` for an N:M pattern, else :func:`row_prune_mask` with ``floor(in × sparsity)``."""
    if nm is not None:
        return nm_prune_mask(scores, *nm)
    return row_prune_mask(scores, count_for_ratio(scores.shape[1], sparsity))
