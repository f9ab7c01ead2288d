"""Pruning criteria: how important each weight is. Lower scores are pruned first.

A criterion is written with Python operators only (``abs``, ``*``, ``+``), so the same code runs on
numpy arrays, torch tensors and Keras/TensorFlow tensors without importing any of them.

``score(weight, grad, previous)`` returns the new score; ``previous`` is the last score (``None`` at
first). Criteria with ``needs_grad`` are updated at every optimizer step of the pruning window, the
others once, when masks are computed.

The built-in gradient criteria also define ``update(previous, weight, grad, ns)``, the same score written
against an array namespace (:mod:`nc_prune.core.xp`): its ops write into ``previous`` where the namespace
can (torch: ``mul_`` / ``add_`` into the persistent score buffer, no weight-sized temporary beyond the one
``|W * G|`` needs), and are plain expressions for numpy. The result is bit for bit what ``score`` returns.
A criterion that defines only ``score`` (as user-registered ones do) keeps being called through ``score``:
:func:`uses_update` tells which of the two a backend calls.
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

    #: True when ``update`` reads each weight's own entries only, so a backend may call it on pieces of a
    #: layer (flat slices of the weight, gradient and score buffer) to keep its temporaries small.
    elementwise: bool = False

    def score(self, weight: Any, grad: Any, previous: Any) -> Any:
        raise NotImplementedError

    def update(self, previous: Any, weight: Any, grad: Any, ns: Any) -> Any:
        """The new score, as :meth:`score` computes it, with the ops of ``ns``; may write into ``previous``.

        The default calls :meth:`score`."""
        return self.score(weight, grad, previous)


def uses_update(criterion: Criterion) -> bool:
    """Whether ``criterion.update`` computes its score: the class that defines ``update`` is the one that
    defines ``score`` or a subclass of it. A subclass that overrides ``score`` alone (a custom criterion
    built on a built-in one) is called through ``score``, so it runs unchanged."""
    def owner(attr: str) -> Optional[type]:
        return next((c for c in type(criterion).__mro__ if attr in c.__dict__), None)
    if not isinstance(criterion, Criterion):  # a duck-typed criterion: score() only
        return False
    upd, score = owner("update"), owner("score")
    return upd is not None and upd is not Criterion and score is not None and issubclass(upd, score)


@register_criterion("magnitude")
class MagnitudeCriterion(Criterion):
    """``|W|``."""

    def score(self, weight, grad, previous):
        return abs(weight)


@register_criterion("gradient")
class GradientCriterion(Criterion):
    """``|∇W|`` of the latest step."""

    needs_grad = True
    elementwise = True

    def score(self, weight, grad, previous):
        return abs(grad)

    def update(self, previous, weight, grad, ns):
        return ns.abs(grad, out=previous)


@register_criterion("snip")
class SnipCriterion(Criterion):
    """``|W · ∇W|`` of the latest step (first-order loss change when a weight is removed)."""

    needs_grad = True
    elementwise = True

    def score(self, weight, grad, previous):
        return abs(weight * grad)

    def update(self, previous, weight, grad, ns):
        return ns.abs_mul(weight, grad, out=previous)


@register_criterion("snip_momentum")
class SnipMomentumCriterion(Criterion):
    """``0.9 · previous + |W · ∇W|``: SNIP smoothed over steps."""

    needs_grad = True
    elementwise = True
    alpha = 0.9
    beta = 1.0

    def score(self, weight, grad, previous):
        new = abs(weight * grad)
        if self.beta != 1.0:
            new = new * self.beta
        return new if previous is None else previous * self.alpha + new

    def update(self, previous, weight, grad, ns):
        new = ns.abs_mul(weight, grad)  # the one temporary: |W * G| before it is added
        if self.beta != 1.0:
            new = ns.scale(new, self.beta, out=new)
        return new if previous is None else ns.scale_add(previous, self.alpha, new, out=previous)
