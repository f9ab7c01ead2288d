"""The pruning methods and functions of ``torch.nn.utils.prune``, with the same masks.

Where PyTorch's choice depends on random numbers, the same generator calls are made in the same order,
so a seeded run gives the same mask. Where it depends on ``torch.topk``, the selection is exact and
fast (:func:`._select.topk_masks`), and identical to ``torch.topk``'s, ties included.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ._errors import NotPrunedError, ShapeMismatchError
from ._select import topk_masks
from .base import (Amount, BasePruningMethod, channel_mask, channel_norms, check_module, checked_dim, units_to_prune,
                   validate_amount, validate_amount_init, validate_structured)


class Identity(BasePruningMethod):
    """Prunes nothing: sets up ``<name>_orig`` / ``<name>_mask`` with a mask of ones."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask

    @classmethod
    def apply(cls, module: nn.Module, name: str) -> "Identity":  # type: ignore[override]
        return super().apply(module, name)


class CountedUnstructured(BasePruningMethod):
    """Base of the unstructured methods: prunes ``amount`` entries, those :meth:`picked` returns."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: Amount) -> None:
        validate_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        count = units_to_prune(self.amount, t.nelement())
        validate_amount(count, t.nelement(), "entries")
        mask = default_mask.clone(memory_format=torch.contiguous_format)
        if count:
            mask.view(-1)[self.picked(t, count)] = 0
        return mask

    def picked(self, t: torch.Tensor, count: int) -> torch.Tensor:
        """A flat boolean tensor marking the ``count`` entries of ``t`` to prune."""
        raise NotImplementedError


class RandomUnstructured(CountedUnstructured):
    """Prunes ``amount`` entries chosen at random (a count, or a fraction of the entries)."""

    def picked(self, t: torch.Tensor, count: int) -> torch.Tensor:
        return topk_masks([torch.rand_like(t)], count, largest=True)[0]

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount) -> "RandomUnstructured":  # type: ignore[override]
        return super().apply(module, name, amount=amount)


class L1Unstructured(CountedUnstructured):
    """Prunes the ``amount`` entries of smallest absolute value (a count, or a fraction of the entries)."""

    def picked(self, t: torch.Tensor, count: int) -> torch.Tensor:
        return topk_masks([torch.abs(t.detach())], count)[0]

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount,  # type: ignore[override]
              importance_scores: Optional[torch.Tensor] = None) -> "L1Unstructured":
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


class CountedStructured(BasePruningMethod):
    """Base of the channel methods: prunes ``amount`` channels along ``dim``, all but those :meth:`kept`."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount: Amount, dim: int = -1) -> None:
        validate_amount_init(amount)
        self.amount = amount
        self.dim = dim

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        validate_structured(t)
        dim = checked_dim(t, self.dim)
        channels = t.shape[dim]
        count = units_to_prune(self.amount, channels)
        validate_amount(count, channels, "channels")
        if count == 0:
            return default_mask
        mask = channel_mask(t, dim, self.kept(t, channels, count))
        mask *= default_mask.to(dtype=mask.dtype)
        return mask

    def kept(self, t: torch.Tensor, channels: int, count: int) -> torch.Tensor:
        """A boolean tensor over the ``channels`` marking those that stay when ``count`` go."""
        raise NotImplementedError


class RandomStructured(CountedStructured):
    """Prunes ``amount`` whole channels along ``dim`` chosen at random."""

    def kept(self, t: torch.Tensor, channels: int, count: int) -> torch.Tensor:
        draw = torch.rand(channels)
        return draw > torch.kthvalue(draw, k=count).values

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount,  # type: ignore[override]
              dim: int = -1) -> "RandomStructured":
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(CountedStructured):
    """Prunes the ``amount`` channels along ``dim`` of smallest L``n`` norm (``n`` as ``p`` of ``torch.norm``)."""

    def __init__(self, amount: Amount, n: Any, dim: int = -1) -> None:
        super().__init__(amount, dim)
        self.n = n

    def kept(self, t: torch.Tensor, channels: int, count: int) -> torch.Tensor:
        return topk_masks([channel_norms(t.detach(), self.n, self.dim)], channels - count, largest=True)[0]

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount, n: Any,  # type: ignore[override]
              dim: int, importance_scores: Optional[torch.Tensor] = None) -> "LnStructured":
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Applies a given mask (1 = keep) on top of any earlier one."""

    PRUNING_TYPE = "global"

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if default_mask.shape != self.mask.shape:
            raise ShapeMismatchError(f"the custom mask has shape {tuple(self.mask.shape)} but the tensor it prunes "
                                     f"has shape {tuple(default_mask.shape)}; they must match")
        return default_mask * self.mask.to(dtype=default_mask.dtype, device=default_mask.device)

    @classmethod
    def apply(cls, module: nn.Module, name: str, mask: torch.Tensor) -> "CustomFromMask":  # type: ignore[override]
        return super().apply(module, name, mask=mask)


# ---- function forms: prune in place and return the module -----------------------------------------
def identity(module: nn.Module, name: str) -> nn.Module:
    """Reparametrize ``module.<name>`` with a mask of ones (prunes nothing)."""
    Identity.apply(module, name)
    return module


def random_unstructured(module: nn.Module, name: str, amount: Amount) -> nn.Module:
    """Prune ``amount`` random entries of ``module.<name>``.

    >>> m = random_unstructured(nn.Linear(4, 3), "weight", amount=5)
    >>> int((m.weight_mask == 0).sum())
    5
    """
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module: nn.Module, name: str, amount: Amount,
                    importance_scores: Optional[torch.Tensor] = None) -> nn.Module:
    """Prune the ``amount`` entries of ``module.<name>`` with the smallest ``|importance_scores|``.

    >>> m = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = m.weight.copy_(torch.tensor([[0.1, -2.0], [3.0, -0.2]]))
    >>> l1_unstructured(m, "weight", amount=0.5).weight_mask
    tensor([[0., 1.],
            [1., 0.]])
    """
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module: nn.Module, name: str, amount: Amount, dim: int) -> nn.Module:
    """Prune ``amount`` random channels of ``module.<name>`` along ``dim``."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module: nn.Module, name: str, amount: Amount, n: Any, dim: int,
                  importance_scores: Optional[torch.Tensor] = None) -> nn.Module:
    """Prune the ``amount`` channels of ``module.<name>`` along ``dim`` with the smallest L``n`` norm."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: nn.Module, name: str, mask: torch.Tensor) -> nn.Module:
    """Prune ``module.<name>`` with a given mask (1 = keep)."""
    CustomFromMask.apply(module, name, mask)
    return module


def remove(module: nn.Module, name: str) -> nn.Module:
    """Make the pruning of ``module.<name>`` permanent and drop ``<name>_orig`` / ``<name>_mask``.

    >>> m = remove(l1_unstructured(nn.Linear(5, 7), "weight", amount=0.2), "weight")
    >>> sorted(m.state_dict())
    ['bias', 'weight']
    """
    check_module(module, "remove")
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise NotPrunedError(f"{type(module).__name__}.{name} is not pruned by nc_prune.torch.prune, so there is no "
                         f"pruning to remove")


def is_pruned(module: nn.Module) -> bool:
    """Whether ``module`` or any of its submodules carries a pruning method."""
    check_module(module, "is_pruned")
    return any(isinstance(hook, BasePruningMethod)
               for sub in module.modules() for hook in sub._forward_pre_hooks.values())


__all__ = ["Identity", "CountedUnstructured", "CountedStructured", "RandomUnstructured", "L1Unstructured",
           "RandomStructured", "LnStructured", "CustomFromMask", "identity", "random_unstructured",
           "l1_unstructured", "random_structured", "ln_structured", "custom_from_mask", "remove", "is_pruned",
           "channel_norms"]
