"""``PruneImplBase``: a pruning parametrization in the style of coreai_opt.

An implementation is an ``nn.Module`` registered with ``torch.nn.utils.parametrize`` on a layer's
weight. Its :meth:`~PruneImplBase.forward` returns ``weight * mask``; the mask is a boolean buffer,
recomputed by the static :meth:`~PruneImplBase.compute_mask` only when it is stale — never computed yet,
for another shape, or for another sparsity than the current one. A schedule attached to the
implementation moves that sparsity with :meth:`~PruneImplBase.update_sparsity`.

>>> import torch
>>> from torch import nn
>>> from torch.nn.utils import parametrize
>>> layer = nn.Linear(8, 4)
>>> impl = MagnitudePruneImpl(target_sparsity=0.5, pruning_scheme=NMStructured(n=2, m=4))
>>> parametrize.register_parametrization(layer, "weight", impl)
ParametrizedLinear(...)
>>> (layer.weight == 0).sum().item()
16
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, Optional

import torch
from torch import nn

from ...core.errors import ConfigError, ConfigTypeError, PruningStateError
from ...core.registry import Registry
from ._checks import integer, number
from .registry import PartialConstructor, RegistryMixin
from .schedules import SparsityScheduleBase
from .schemes import NMStructured, PruningScheme, scheme_mask

__all__ = ["PruneImplBase", "MagnitudePruneImpl", "NMStructured"]


class PruneImplBase(RegistryMixin, nn.Module, abc.ABC):
    """Abstract base of pruning parametrizations that mask a layer's weight.

    Args:
        target_sparsity: the fraction of weights to prune in the end, in ``[0, 1]``.
        pruning_scheme: the structure of the sparsity (:mod:`.schemes`).
        schedule: optional :class:`SparsityScheduleBase`; with one, the sparsity starts at the
            schedule's value for step 0 and follows :meth:`update_sparsity`. Without, it is the target.

    Attributes:
        schedule: the attached schedule, or ``None``; may be set at any time.
        mask: the boolean mask buffer (``None`` until the first forward).
    """

    _registry: ClassVar[Registry] = Registry("prune implementation")
    schedule: Optional[SparsityScheduleBase] = None

    def __init__(self, target_sparsity: float, pruning_scheme: PruningScheme, **kwargs: Any) -> None:
        super().__init__()
        schedule = kwargs.pop("schedule", None)
        if kwargs:
            raise ConfigError(f"{type(self).__name__} got unknown arguments {sorted(kwargs)}; it takes "
                              f"target_sparsity, pruning_scheme and schedule")
        target = number(type(self).__name__, "target_sparsity", target_sparsity, 0.0, 1.0,
                        "the fraction of weights to prune in the end, a number in [0, 1] such as 0.5")
        if not isinstance(pruning_scheme, PruningScheme):
            raise ConfigTypeError(f"pruning_scheme must be a PruningScheme such as Unstructured() or "
                                  f"NMStructured(2, 4), got {type(pruning_scheme).__name__} {pruning_scheme!r}")
        if target > pruning_scheme.max_sparsity + 1e-9:
            raise ConfigError(f"target_sparsity={target} is above what {pruning_scheme} can reach "
                              f"({pruning_scheme.max_sparsity}); lower it or choose another scheme")
        if schedule is not None and not isinstance(schedule, SparsityScheduleBase):
            raise ConfigTypeError(f"schedule must be a SparsityScheduleBase, got {type(schedule).__name__}")
        self.target_sparsity = target
        self.pruning_scheme = pruning_scheme
        if schedule is not None:
            self.schedule = schedule
        self._sparsity = target if schedule is None else self._scheduled(schedule, 0, None)
        self._mask_sparsity: Optional[float] = None
        self.register_buffer("mask", None)
        self._register_load_state_dict_pre_hook(_make_room_for_mask, with_module=True)

    @staticmethod
    @abc.abstractmethod
    def compute_mask(weight: torch.Tensor, sparsity: float, pruning_scheme: PruningScheme) -> torch.Tensor:
        """A binary mask of ``weight``'s shape (1 = keep, 0 = prune) at ``sparsity`` in ``pruning_scheme``."""

    @property
    def sparsity(self) -> float:
        """The sparsity of the mask (as of the next forward, after :meth:`update_sparsity` changed it)."""
        return self._sparsity

    def _stale(self, weight: torch.Tensor) -> bool:
        return self.mask is None or self._mask_sparsity != self._sparsity or self.mask.shape != weight.shape

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Recompute the mask if it is stale, then return ``weight * mask``."""
        if self._stale(weight):
            with torch.no_grad():
                mask = self.compute_mask(weight.detach(), self._sparsity, self.pruning_scheme)
            if not isinstance(mask, torch.Tensor) or mask.shape != weight.shape:
                raise ConfigError(f"{type(self).__name__}.compute_mask returned "
                                  f"{getattr(mask, 'shape', type(mask).__name__)} for a weight of shape "
                                  f"{tuple(weight.shape)}; it must return a mask of the weight's shape")
            self.mask = mask.to(device=weight.device, dtype=torch.bool)
            self._mask_sparsity = self._sparsity
        return weight * self.mask

    def update_sparsity(self, step_count: int) -> None:
        """Set the sparsity from the schedule at ``step_count``; the mask follows at the next forward.

        Raises:
            RuntimeError: no schedule is attached (:class:`~nc_prune.core.errors.PruningStateError`).
        """
        owner = f"{type(self).__name__}.update_sparsity()"
        if self.schedule is None:
            raise PruningStateError(f"{owner} needs a schedule: set impl.schedule = "
                                    f"PolynomialDecaySchedule(total_iters=...) (or pass schedule= to the constructor) "
                                    f"first")
        if not isinstance(self.schedule, SparsityScheduleBase):
            raise ConfigTypeError(f"{owner}: impl.schedule is a {type(self.schedule).__name__}, not a "
                                  f"SparsityScheduleBase; set it to a schedule such as "
                                  f"PolynomialDecaySchedule(total_iters=...), or to None")
        step = integer(owner, "step_count", step_count, 0)
        self._sparsity = self._scheduled(self.schedule, step, self._sparsity)

    def _scheduled(self, schedule: SparsityScheduleBase, step: int, prev: Optional[float]) -> float:
        """The schedule's sparsity at ``step``, checked, and capped at what the scheme can reach."""
        value = number(f"{type(schedule).__name__}.compute_sparsity()", "returned sparsity",
                       schedule.compute_sparsity(step, self.target_sparsity, prev), 0.0, 1.0, "a fraction in [0, 1]")
        return min(value, self.pruning_scheme.max_sparsity)

    @classmethod
    def with_args(cls, **kwargs: Any) -> PartialConstructor["PruneImplBase"]:
        """A partial constructor: ``Impl.with_args(target_sparsity=0.5)(pruning_scheme=...)``."""
        return PartialConstructor(cls, **kwargs)

    def get_extra_state(self) -> Dict[str, Optional[float]]:
        return {"sparsity": self._sparsity, "mask_sparsity": self._mask_sparsity}

    def set_extra_state(self, state: Dict[str, Optional[float]]) -> None:
        self._sparsity = state["sparsity"]
        self._mask_sparsity = state["mask_sparsity"]

    def extra_repr(self) -> str:
        return (f"target_sparsity={self.target_sparsity}, sparsity={self._sparsity}, "
                f"pruning_scheme={self.pruning_scheme!r}, schedule={self.schedule!r}")


def _make_room_for_mask(module: PruneImplBase, state_dict, prefix, *args) -> None:
    """Loading a checkpoint into an implementation that has not computed its mask yet."""
    saved = state_dict.get(prefix + "mask")
    if isinstance(saved, torch.Tensor) and (module.mask is None or module.mask.shape != saved.shape):
        module.mask = torch.empty_like(saved, dtype=torch.bool)


@PruneImplBase.register("default")
@PruneImplBase.register("magnitude")
class MagnitudePruneImpl(PruneImplBase):
    """Prunes the weights (or blocks, channels, N:M groups) of smallest magnitude, via the engine."""

    @staticmethod
    def compute_mask(weight: torch.Tensor, sparsity: float, pruning_scheme: PruningScheme) -> torch.Tensor:
        return scheme_mask(weight.abs(), sparsity, pruning_scheme)
