"""Sparsity schedules: pure functions of the step count and the target, on the engine's curves.

>>> s = PolynomialDecaySchedule(total_iters=4, power=1.0)
>>> [round(s.compute_sparsity(step, 0.6), 3) for step in range(6)]
[0.0, 0.2, 0.4, 0.6, 0.6, 0.6]
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from ...core.registry import Registry
from ...core.schedulers import polynomial_decay, sparsity_at
from ._checks import FRACTION, integer, number, store
from .registry import RegistryMixin


class SparsityScheduleBase(RegistryMixin, abc.ABC):
    """How the sparsity rises over training steps toward the target."""

    _registry: ClassVar[Registry] = Registry("sparsity schedule")

    @abc.abstractmethod
    def compute_sparsity(self, step_count: int, target_sparsity: float,
                         prev_sparsity: Optional[float] = None) -> float:
        """The sparsity to apply at ``step_count`` (``prev_sparsity`` is accepted and not needed here)."""

    def _arguments(self, step_count: int, target_sparsity: float) -> Tuple[int, float]:
        """``step_count`` and ``target_sparsity`` checked: an int >= 0 and a fraction."""
        owner = f"{type(self).__name__}.compute_sparsity()"
        return (integer(owner, "step_count", step_count, 0),
                number(owner, "target_sparsity", target_sparsity, 0.0, 1.0, FRACTION))


@SparsityScheduleBase.register("constant")
@dataclass(frozen=True)
class ConstantSparsitySchedule(SparsityScheduleBase):
    """0 before ``begin_step``, the target at and after it (the engine's one-shot schedule)."""

    begin_step: int = 0

    def __post_init__(self) -> None:
        store(self, begin_step=integer(type(self).__name__, "begin_step", self.begin_step, 0))

    def compute_sparsity(self, step_count: int, target_sparsity: float,
                         prev_sparsity: Optional[float] = None) -> float:
        step_count, target_sparsity = self._arguments(step_count, target_sparsity)
        return sparsity_at(step_count, self.begin_step, self.begin_step, 1, target_sparsity, init=0.0)


@SparsityScheduleBase.register("polynomial_decay")
@dataclass(frozen=True)
class PolynomialDecaySchedule(SparsityScheduleBase):
    """From ``initial_sparsity`` to the target over ``total_iters`` steps along ``(1 - t) ** power``.

    Updates happen every ``update_frequency`` steps from ``begin_step``; update ``i`` of ``n`` uses
    ``t = i / max(n - 1, 1)``, so the first one is at ``initial_sparsity`` and the last one at the target.
    Before ``begin_step`` the sparsity is ``initial_sparsity``; from ``begin_step + total_iters`` on, the target.
    Between updates the value of the latest update holds, so no ``prev_sparsity`` is needed.
    """

    total_iters: int = 1
    begin_step: int = 0
    power: float = 3.0
    initial_sparsity: float = 0.0
    update_frequency: int = 1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        store(self, total_iters=integer(owner, "total_iters", self.total_iters, 1),
              begin_step=integer(owner, "begin_step", self.begin_step, 0),
              update_frequency=integer(owner, "update_frequency", self.update_frequency, 1),
              power=number(owner, "power", self.power, 0.0, math.inf, "a finite number > 0 (1 is linear, 3 cubic)",
                           lo_open=True, hi_open=True),
              initial_sparsity=number(owner, "initial_sparsity", self.initial_sparsity, 0.0, 1.0, FRACTION))

    def compute_sparsity(self, step_count: int, target_sparsity: float,
                         prev_sparsity: Optional[float] = None) -> float:
        step_count, target_sparsity = self._arguments(step_count, target_sparsity)
        if step_count >= self.begin_step + self.total_iters:
            return target_sparsity
        index = (step_count - self.begin_step) // self.update_frequency
        if index <= 0:  # before begin_step, and the first update
            return self.initial_sparsity
        updates = math.ceil(self.total_iters / self.update_frequency)
        return polynomial_decay(index / max(updates - 1, 1), self.initial_sparsity, target_sparsity, self.power)
