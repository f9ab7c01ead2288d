"""Sparsity schedules as pure functions of the step.

Pruning happens at ``start_step``, ``start_step + f``, … up to ``end_step`` (``f`` = pruning_frequency).
With ``n`` such steps, the i-th (1-based) aims at ``decay(i / n, init, target)``, so the last one reaches
the target. ``start_step == end_step`` is one-shot: the full target at ``start_step``.

>>> [round(sparsity_at(s, 0, 4, 1, 0.8, "linear"), 3) for s in range(6)]
[0.16, 0.32, 0.48, 0.64, 0.8, 0.8]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .registry import SCHEDULERS, SPARSITY_DECAYS, register_scheduler, register_sparsity_decay


@register_sparsity_decay("linear")
def linear_decay(progress: float, init: float, target: float) -> float:
    return init + (target - init) * progress


@register_sparsity_decay("exp")
def exp_decay(progress: float, init: float, target: float) -> float:
    """The dense fraction shrinks by the same factor at every pruning step."""
    if init >= 1.0:
        return init
    return 1.0 - (1.0 - init) * ((1.0 - target) / (1.0 - init)) ** progress


@register_sparsity_decay("cos")
def cos_decay(progress: float, init: float, target: float) -> float:
    return init + (target - init) * (1.0 - math.cos(progress * math.pi / 2.0))


def polynomial_decay(progress: float, init: float, target: float, power: float = 3.0) -> float:
    """``target + (init - target) * (1 - progress) ** power``: fast start, slow finish for ``power > 1``.

    ``power=3`` is the ``"cube"`` curve and ``power=1`` the ``"linear"`` one, up to float rounding.
    """
    return target + (init - target) * (1.0 - progress) ** power


@register_sparsity_decay("cube")
def cube_decay(progress: float, init: float, target: float) -> float:
    return init + (target - init) * (1.0 - (1.0 - progress) ** 3)


def pruning_steps_count(start: int, end: int, frequency: int) -> int:
    """How many pruning steps lie in ``[start, end]``."""
    return (end - start) // frequency + 1


def is_pruning_step(step: int, start: int, end: int, frequency: int) -> bool:
    return start <= step <= end and (step - start) % frequency == 0


def sparsity_at(step: int, start: int, end: int, frequency: int, target: float,
                decay: str = "exp", init: float = 0.0) -> float:
    """Target sparsity in force at ``step`` (that of the latest pruning step at or before it)."""
    if step < start:
        return init
    n = pruning_steps_count(start, end, frequency)
    i = min((step - start) // frequency + 1, n)
    if i >= n:
        return target
    return SPARSITY_DECAYS.get(decay)(i / n, init, target)


class Scheduler:
    """Base scheduler (INC's ``PruningScheduler``): the target at each pruning step."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.start_step = int(config["start_step"])
        self.end_step = int(config["end_step"])
        self.pruning_frequency = int(config["pruning_frequency"])
        self.target_sparsity = float(config["target_sparsity"])
        self.decay = config["sparsity_decay_type"]

    def is_pruning_step(self, step: int) -> bool:
        return is_pruning_step(step, self.start_step, self.end_step, self.pruning_frequency)

    def last_pruning_step(self) -> int:
        n = pruning_steps_count(self.start_step, self.end_step, self.pruning_frequency)
        return self.start_step + (n - 1) * self.pruning_frequency

    def update_sparsity_ratio(self, step: int, init: float = 0.0) -> float:
        raise NotImplementedError


@register_scheduler("oneshot")
class OneshotScheduler(Scheduler):
    """The full target at ``start_step``."""

    def update_sparsity_ratio(self, step: int, init: float = 0.0) -> float:
        return self.target_sparsity if step >= self.start_step else init

    def is_pruning_step(self, step: int) -> bool:
        return step == self.start_step


@register_scheduler("iterative")
class IterativeScheduler(Scheduler):
    """A decay curve from ``init`` to the target over the pruning steps."""

    def update_sparsity_ratio(self, step: int, init: float = 0.0) -> float:
        return sparsity_at(step, self.start_step, self.end_step, self.pruning_frequency,
                           self.target_sparsity, self.decay, init)


def get_scheduler(config: Mapping[str, Any]) -> Scheduler:
    name = "oneshot" if config["start_step"] == config["end_step"] else "iterative"
    return SCHEDULERS.get(name)(config)
