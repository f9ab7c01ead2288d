"""Pruning criteria: how important each weight is. Lower scores are pruned first.

A criterion is written with Python operators only (``abs``, ``*``, ``+``), so the same code runs on
numpy arrays, torch tensors and Keras/TensorFlow tensors without importing any of them.

``score(weight, grad, previous)`` returns the new score; ``previous`` is the last score (``None`` at
first). Criteria with ``needs_grad`` are updated at every optimizer step of the pruning window, the
others once, when masks are computed.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .parameters import Param
from .registry import register_criterion


class Criterion:
    """Base class. Set ``needs_grad`` when :meth:`score` reads the gradient."""

    needs_grad: bool = False
    #: Keys this criterion reads from the group's ``parameters`` (see :mod:`nc_prune.core.parameters`).
    PARAMETERS: Dict[str, Param] = {}

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        self.config = dict(config or {})

    def score(self, weight: Any, grad: Any, previous: Any) -> Any:
        raise NotImplementedError


@register_criterion("magnitude")
class MagnitudeCriterion(Criterion):
    """``|W|``."""

    def score(self, weight, grad, previous):
        return abs(weight)


@register_criterion("gradient")
class GradientCriterion(Criterion):
    """``|∇W|`` of the latest step."""

    needs_grad = True

    def score(self, weight, grad, previous):
        return abs(grad)


@register_criterion("snip")
class SnipCriterion(Criterion):
    """``|W · ∇W|`` of the latest step (first-order loss change when a weight is removed)."""

    needs_grad = True

    def score(self, weight, grad, previous):
        return abs(weight * grad)


@register_criterion("snip_momentum")
class SnipMomentumCriterion(Criterion):
    """``0.9 · previous + |W · ∇W|``: SNIP smoothed over steps."""

    needs_grad = True
    alpha = 0.9
    beta = 1.0

    def score(self, weight, grad, previous):
        new = abs(weight * grad)
        if self.beta != 1.0:
            new = new * self.beta
        return new if previous is None else previous * self.alpha + new
