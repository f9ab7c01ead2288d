"""Wanda (Sun et al., 2024): prune by ``|W| · ‖x‖₂`` — each weight's size times the norm of its input.

``‖x_j‖₂`` is the norm of input feature ``j`` over the calibration tokens, so a small weight on a loud input
can outrank a large one on a quiet input. Weights are compared within each output row (``"1x1"``) or each
group of M (``N:M``), and the weights kept are not changed.

>>> import numpy as np
>>> w = np.array([[1.0, -2.0, 0.5, 4.0]])
>>> wanda_scores(w, np.array([16.0, 1.0, 100.0, 0.25]))  # squared norms
array([[4., 2., 5., 2.]])
"""

from __future__ import annotations

from typing import Any


def wanda_scores(weight: Any, squared_norms: Any) -> Any:
    """``|W_ij| · sqrt(squared_norms_j)`` for a 2-D weight ``(out, in)`` and the inputs' squared norms ``(in,)``."""
    return abs(weight) * (squared_norms ** 0.5)[None, :]
