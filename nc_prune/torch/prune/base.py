"""``BasePruningMethod`` and ``PruningContainer``: the reparametrization shared by every method.

Pruning ``module.<name>`` moves the ``nn.Parameter`` object to ``<name>_orig`` (so optimizers that hold
it keep working), stores the mask as the buffer ``<name>_mask`` (in the parameter's dtype, as PyTorch
does) and registers the method as a forward pre-hook. ``module.<name>`` then reads as
``<name>_orig * <name>_mask`` — computed at every read, so it is never stale (see ``_reparam``).
"""

from __future__ import annotations

import abc
import numbers
import operator
from typing import Any, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from ...core.errors import ConfigError, ConfigTypeError
from . import _reparam
from ._errors import (AmountError, AmountTypeError, DoublePruningHookError, EmptyContainerError, MissingTensorError,
                      NameTakenError, NotAModuleError, NotAParameterError, NotAttachedError, NotPrunedError,
                      PruningDimError, ShapeMismatchError)

Amount = Union[int, float]


# ---- amount and shape rules (the same rules, and exception types, as torch.nn.utils.prune) ------------
# Each is also exported under PyTorch's private name (``_validate_pruning_amount_init`` ...), see __init__.
def validate_amount_init(amount: Any) -> None:
    """``amount`` is a non-negative int (a count) or a float in ``[0, 1]`` (a fraction).

    PyTorch's ``_validate_pruning_amount_init``, except that a NaN fraction is refused here already
    (PyTorch accepts it, then fails with a ``ValueError`` when it converts the fraction to a count).
    """
    if not isinstance(amount, numbers.Real):
        raise AmountTypeError(f"amount must be an int (a count) or a float in [0, 1] (a fraction), "
                              f"got {type(amount).__name__} {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise AmountError(f"amount={amount} is a negative count; pass a count >= 0 or a fraction in [0, 1]")
    elif not 0.0 <= float(amount) <= 1.0:
        raise AmountError(f"amount={amount} is a fraction outside [0, 1]; pass a fraction in [0, 1] "
                          f"or an int count")


def units_to_prune(amount: Amount, tensor_size: int) -> int:
    """An int amount as it is; a fraction of ``tensor_size`` rounded to nearest (Python's ``round``, ties to even).

    PyTorch's ``_compute_nparams_toprune``.
    """
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return int(round(amount * tensor_size))


def validate_amount(amount: Amount, tensor_size: int, what: str = "units") -> None:
    """An int ``amount`` (a count) is at most ``tensor_size``; a fraction always fits.

    PyTorch's ``_validate_pruning_amount``; ``what`` names the units in the message.
    """
    if isinstance(amount, numbers.Integral) and amount > tensor_size:
        raise AmountError(f"amount={amount} asks to prune more {what} than the {tensor_size} there are; "
                          f"pass at most {tensor_size}, or a fraction")


def validate_structured(t: torch.Tensor) -> None:
    """``t`` has 2 or more dimensions, so it has channels (PyTorch's ``_validate_structured_pruning``)."""
    if t.dim() <= 1:
        raise ConfigError(f"structured pruning needs a tensor of 2 or more dimensions to have channels; "
                          f"got shape {tuple(t.shape)}. Use an unstructured method for it")


def _dim_index(t: torch.Tensor, dim: Any) -> int:
    """``dim`` as an int (anything PyTorch indexes a shape with: an int, a numpy or 0-d tensor integer)."""
    try:
        return operator.index(dim)
    except TypeError:
        raise ConfigTypeError(f"dim must be an int naming a dimension of the tensor of shape {tuple(t.shape)}, "
                              f"got {type(dim).__name__} {dim!r}") from None


def _dim_rule(t: torch.Tensor, dim: int) -> str:
    return f"dim={dim} does not index a tensor of shape {tuple(t.shape)}; use a dim in [{-t.dim()}, {t.dim() - 1}]"


def checked_dim(t: torch.Tensor, dim: Any) -> int:
    """``dim`` as the index (``0 <= index < t.dim()``) of the dimension of ``t`` it names; see :func:`validate_dim`."""
    index = _dim_index(t, dim)
    if not -t.dim() <= index < t.dim():
        raise PruningDimError(_dim_rule(t, index))
    return index % t.dim()


def validate_dim(t: torch.Tensor, dim: Any) -> None:
    """``dim`` is an int indexing a dimension of ``t`` (PyTorch's ``_validate_pruning_dim``).

    PyTorch checks only ``dim < t.dim()`` here and fails on a too negative ``dim`` a line later, with the
    same ``IndexError``; both are refused here.
    """
    checked_dim(t, dim)


def channel_norms(t: torch.Tensor, n: Any, dim: Any) -> torch.Tensor:
    """The L``n`` norm of every channel along ``dim``, over all other dimensions (``n`` as ``p`` of ``torch.norm``).

    PyTorch's ``_compute_norm``, with its exception types: a ``dim`` past the last dimension is a
    ``ValueError``, one before the first an ``IndexError``. Gradients flow as through ``torch.norm``.
    """
    index = _dim_index(t, dim)
    if index >= t.dim():
        raise ConfigError(_dim_rule(t, index))
    index = checked_dim(t, index)
    return torch.norm(t, p=n, dim=[d for d in range(t.dim()) if d != index])


def channel_mask(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    """A mask like ``t`` (same dtype) that is 1 on the kept channels along ``dim``."""
    mask = torch.zeros_like(t)
    mask.movedim(dim, 0)[keep.to(t.device)] = 1
    return mask


# ---- the method base ------------------------------------------------------------------------------
class BasePruningMethod(_reparam.MaskedTensorHook, abc.ABC):
    """Base of every pruning method (PyTorch's ``torch.nn.utils.prune.BasePruningMethod``).

    Subclasses set ``PRUNING_TYPE`` (``"unstructured"``, ``"structured"`` with a ``dim`` attribute, or
    ``"global"``) and implement :meth:`compute_mask`; ``apply`` does the rest.
    """

    PRUNING_TYPE: str
    _tensor_name: Optional[str] = None

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        """Forward pre-hook: hands the fresh tensor to modules that cache it (``nn.LSTM``)."""
        name = self._require_name(module)
        if name in _reparam.pruned_names(module):
            _reparam.refresh(module, name, self)
        else:  # used by hand on a module this package did not prune: behave as PyTorch does
            setattr(module, name, self.apply_mask(module))

    @abc.abstractmethod
    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """The new mask for ``t`` (importance scores), on top of ``default_mask`` (the previous mask)."""

    def apply_mask(self, module: nn.Module) -> torch.Tensor:
        """``<name>_orig * <name>_mask`` of ``module`` (the mask cast to the parameter's dtype)."""
        return _reparam.masked_tensor(module, self._require_name(module))

    def _require_name(self, module: nn.Module) -> str:
        if self._tensor_name is None:
            raise NotAttachedError(f"{type(self).__name__} is not attached to a tensor of {type(module).__name__}; "
                                   f"prune through {type(self).__name__}.apply(module, name, ...) first")
        return self._tensor_name

    @classmethod
    def apply(cls, module: nn.Module, name: str, *args: Any, importance_scores: Optional[torch.Tensor] = None,
              **kwargs: Any) -> "BasePruningMethod":
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``, stacking on earlier pruning.

        Args:
            module: the module holding the tensor.
            name: the parameter's name in ``module`` (``"weight"``).
            args, kwargs: the method's constructor arguments.
            importance_scores: scores of ``module.<name>``'s shape to rank by; default the tensor itself.

        Returns:
            The method (a :class:`PruningContainer` when the tensor was already pruned).
        """
        return _attach(cls, module, name, args, kwargs, importance_scores)

    def prune(self, t: torch.Tensor, default_mask: Optional[torch.Tensor] = None,
              importance_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``t`` times the mask :meth:`compute_mask` gives for it (``default_mask`` defaults to ones)."""
        if importance_scores is not None and importance_scores.shape != t.shape:
            raise ShapeMismatchError(f"importance_scores has shape {tuple(importance_scores.shape)} but the "
                                     f"tensor has shape {tuple(t.shape)}; they must match")
        scores = t if importance_scores is None else importance_scores
        default = torch.ones_like(t) if default_mask is None else default_mask
        return t * self.compute_mask(scores, default_mask=default)

    def remove(self, module: nn.Module) -> None:
        """Make the pruning permanent: ``<name>`` becomes a Parameter again holding the pruned values.

        The Parameter object is the original one; ``<name>_orig`` and ``<name>_mask`` are deleted. This
        does not un-prune anything.
        """
        name = self._require_name(module)
        if name + "_orig" not in module._parameters or name + "_mask" not in module._buffers:
            raise NotPrunedError(f"{type(module).__name__}.{name} is not pruned (no {name}_orig parameter and "
                                 f"{name}_mask buffer), so there is nothing to remove")
        pruned = self.apply_mask(module)
        orig = module._parameters[name + "_orig"]
        _reparam.unmark_pruned(module, name)
        module.__dict__.pop(name, None)
        orig.data = pruned.data
        del module._parameters[name + "_orig"]
        del module._buffers[name + "_mask"]
        setattr(module, name, orig)


def _pruning_hooks(module: nn.Module, name: str):
    return [(k, h) for k, h in module._forward_pre_hooks.items()
            if isinstance(h, BasePruningMethod) and h._tensor_name == name]


def check_module(module: Any, func: str) -> None:
    """``module`` is an ``nn.Module`` (PyTorch fails on anything else with an ``AttributeError``)."""
    if not isinstance(module, nn.Module):
        raise NotAModuleError(f"{func}(): module must be an nn.Module (the layer holding the tensor), "
                              f"got {type(module).__name__} {module!r:.60}")


def _check_target(module: Any, name: Any, func: str) -> torch.Tensor:
    check_module(module, func)
    if not isinstance(name, str):
        raise ConfigTypeError(f"name must be a string naming a parameter, got {type(name).__name__} {name!r}")
    try:
        return getattr(module, name)
    except AttributeError:
        params = ", ".join(n for n, _ in module.named_parameters(recurse=False)) or "none"
        raise MissingTensorError(f"{type(module).__name__} has no parameter {name!r}; its parameters: {params}") \
            from None


def _attach(cls, module, name, args, kwargs, importance_scores) -> BasePruningMethod:
    current = _check_target(module, name, f"{cls.__name__}.apply")
    hooks = _pruning_hooks(module, name)
    if len(hooks) > 1:
        raise DoublePruningHookError(f"{type(module).__name__}.{name} carries {len(hooks)} pruning hooks; "
                                     f"stack methods with one PruningContainer instead")
    method = cls(*args, **kwargs)
    method._tensor_name = name
    old = hooks[0][1] if hooks else None
    saved: Tuple = ()
    if isinstance(old, PruningContainer):
        saved = old._pruning_methods
        old.add_pruning_method(method)
        method = old
    elif old is not None:
        container = PruningContainer(old)
        container.add_pruning_method(method)
        method = container
    if importance_scores is not None and importance_scores.shape != current.shape:
        raise ShapeMismatchError(f"importance_scores for {type(module).__name__}.{name} have shape "
                                 f"{tuple(importance_scores.shape)} but the parameter has shape "
                                 f"{tuple(current.shape)}; they must match")
    scores = current if importance_scores is None else importance_scores
    if old is None:
        if not isinstance(current, nn.Parameter):
            raise NotAParameterError(f"{type(module).__name__}.{name} is a {type(current).__name__}, not an "
                                     f"nn.Parameter; only parameters can be pruned")
        for suffix, kind in (("_orig", "parameter"), ("_mask", "buffer")):
            if hasattr(module, name + suffix):
                raise NameTakenError(f"{type(module).__name__} already has an attribute {name + suffix!r}; pruning "
                                     f"{name!r} needs that name for its {kind}. Rename the attribute")
        default_mask = torch.ones_like(current)
    else:
        default_mask = getattr(module, name + "_mask").detach().clone(memory_format=torch.contiguous_format)
    try:
        mask = method.compute_mask(scores, default_mask=default_mask)
        if not isinstance(mask, torch.Tensor):
            raise ConfigTypeError(f"{type(method).__name__}.compute_mask returned {type(mask).__name__}, "
                                  f"not a tensor")
    except BaseException:
        if isinstance(old, PruningContainer):
            old._pruning_methods = saved
        raise
    if old is None:
        module.register_parameter(name + "_orig", current)
        del module._parameters[name]
    module.register_buffer(name + "_mask", mask)
    for key, _ in hooks:
        del module._forward_pre_hooks[key]
    _reparam.mark_pruned(module, name)
    module.register_forward_pre_hook(method)
    _reparam.refresh(module, name, method)  # modules that keep copies (nn.LSTM) see the pruned tensor now
    return method


class PruningContainer(BasePruningMethod):
    """A sequence of pruning methods applied one after another to the same tensor.

    Accepts methods as separate arguments (``PruningContainer(m1, m2)``) or one iterable of them. Each new
    method's mask is computed only where the previous mask left something, by the new method's
    ``PRUNING_TYPE``: ``"unstructured"`` on the still-unpruned entries (flattened), ``"structured"`` on the
    channels along ``method.dim`` that still hold an unpruned entry, ``"global"`` on the whole tensor.
    """

    def __init__(self, *args: Any) -> None:
        self._pruning_methods: Tuple[BasePruningMethod, ...] = ()
        if len(args) == 1 and not isinstance(args[0], BasePruningMethod) and isinstance(args[0], Iterable):
            args = tuple(args[0])
        for method in args:
            self.add_pruning_method(method)

    @property
    def PRUNING_TYPE(self) -> str:  # noqa: N802 - PyTorch's name
        """That of the latest method (a container has no type of its own)."""
        return self._latest("PRUNING_TYPE").PRUNING_TYPE

    def add_pruning_method(self, method: BasePruningMethod) -> None:
        """Append ``method``; it must act on the same tensor name as the container."""
        if not isinstance(method, BasePruningMethod):
            raise ConfigTypeError(f"{type(method).__name__} is not a BasePruningMethod subclass; only pruning "
                                  f"methods can be added to a PruningContainer")
        if self._tensor_name is None:
            self._tensor_name = method._tensor_name
        elif method._tensor_name != self._tensor_name:
            raise ConfigError(f"this PruningContainer acts on {self._tensor_name!r}; a method acting on "
                              f"{method._tensor_name!r} cannot join it")
        self._pruning_methods += (method,)

    def _latest(self, what: str) -> BasePruningMethod:
        if not self._pruning_methods:
            raise EmptyContainerError(f"PruningContainer.{what} needs at least one pruning method, and this "
                                      f"container has none; add one with add_pruning_method(method) first")
        return self._pruning_methods[-1]

    def __len__(self) -> int:
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, idx):
        return self._pruning_methods[idx]

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """``default_mask`` combined with the latest method's mask over the part it may still prune."""
        method = self._latest("compute_mask")
        kind = getattr(method, "PRUNING_TYPE", None)
        if kind == "unstructured":
            region: Any = default_mask == 1
        elif kind == "structured":
            if not hasattr(method, "dim"):
                raise AttributeError(f"{type(method).__name__} has PRUNING_TYPE 'structured' but no `dim` "
                                     f"attribute naming its channel dimension; define self.dim")
            dim = checked_dim(t, method.dim)
            others = [d for d in range(t.dim()) if d != dim]
            alive = default_mask.sum(dim=others) != 0
            region = tuple(alive if d == dim else slice(None) for d in range(t.dim()))
        elif kind == "global":
            region = (slice(None),) * t.dim()
        else:
            raise ConfigError(f"{type(method).__name__}.PRUNING_TYPE is {kind!r}; it must be 'unstructured', "
                              f"'structured' or 'global'")
        combined = default_mask.to(dtype=t.dtype, copy=True)
        partial = method.compute_mask(t[region], default_mask=default_mask[region])
        combined[region] = partial.to(dtype=combined.dtype)
        return combined
