"""How a pruned tensor stays fresh: ``module.<name>`` is computed on every read.

``torch.nn.utils.prune`` stores ``module.weight`` as a plain tensor that a forward pre-hook recomputes.
Between two forwards that tensor is stale (after ``load_state_dict``, an optimizer step or ``.to()``), and
because it is a non-leaf tensor, ``copy.deepcopy`` of the module fails.

Here the module's class is swapped for a cached subclass that adds one read-only property per pruned
tensor, returning ``<name>_orig * <name>_mask`` at each read. Nothing else changes: ``<name>_orig`` is
still the original ``nn.Parameter`` object, ``<name>_mask`` is still a buffer, the state_dict keys are the
same, ``repr`` shows the same class name and ``isinstance`` still holds. The subclass pickles and
deep-copies by naming the original class, so ``torch.save(model)`` and ``copy.deepcopy`` work.

Classes that intercept assignments (``nn.RNNBase`` keeps ``_flat_weights`` in step through
``__setattr__``) still receive the fresh tensor before every forward, as with PyTorch.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Dict, FrozenSet, Iterator, Optional

import torch
from torch import nn

from ._errors import WeightAssignmentError
from ...core.errors import PruningStateError

_LOCAL = threading.local()
_CLASSES: "weakref.WeakKeyDictionary[type, Dict[FrozenSet[str], type]]" = weakref.WeakKeyDictionary()


class MaskedTensorHook:
    """What the reparametrization needs of a pruning method: the tensor name and ``apply_mask``."""

    _tensor_name: Optional[str] = None

    def apply_mask(self, module: nn.Module) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


def find_hook(module: nn.Module, name: str) -> Optional[MaskedTensorHook]:
    """The pruning hook acting on ``module.<name>``, or ``None``."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, MaskedTensorHook) and hook._tensor_name == name:
            return hook
    return None


def masked_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """``<name>_mask * <name>_orig``, the mask cast to the parameter's dtype (gradients reach ``_orig``)."""
    orig = getattr(module, name + "_orig")
    mask = getattr(module, name + "_mask")
    return mask.to(dtype=orig.dtype) * orig


def _make_property(name: str) -> property:
    def read(self: nn.Module) -> torch.Tensor:
        try:
            hook = find_hook(self, name)
            return hook.apply_mask(self) if hook is not None else masked_tensor(self, name)
        except AttributeError as exc:
            # An AttributeError escaping a property makes Python fall back to Module.__getattr__,
            # which would hide the cause behind "has no attribute"; surface it instead.
            raise PruningStateError(
                f"{type(self).__name__}.{name} is pruned but cannot be computed: {exc}. Its parts "
                f"{name}_orig / {name}_mask were removed by hand; call prune.remove() to undo pruning instead"
            ) from exc

    def write(self: nn.Module, value: object) -> None:
        if getattr(_LOCAL, "depth", 0):
            return  # our own refresh, made so that __setattr__ overrides (RNNs) see the new tensor
        raise WeightAssignmentError(
            f"{type(self).__name__}.{name} is pruned: it is always {name}_orig * {name}_mask and cannot be "
            f"assigned. Write the values into {name}_orig (with torch.no_grad(): "
            f"module.{name}_orig.copy_(t)), or call prune.remove(module, {name!r}) first"
        )

    return property(read, write, doc=f"``{name}_orig * {name}_mask``, recomputed at every read.")


def _rebuild(base: type, names: tuple) -> nn.Module:
    cls = _class_for(base, frozenset(names))
    return cls.__new__(cls)


def _reduce_ex(self: nn.Module, protocol: int):
    cls = type(self)
    return _rebuild, (cls._nc_prune_base, tuple(sorted(cls._nc_prune_names))), self.__getstate__()


def base_class(module: nn.Module) -> type:
    """The module's own class, behind any pruning subclass."""
    return type(module).__dict__.get("_nc_prune_base", type(module))


def pruned_names(module: nn.Module) -> FrozenSet[str]:
    """Names of the tensors of ``module`` that are computed from ``_orig`` and ``_mask``."""
    return type(module).__dict__.get("_nc_prune_names", frozenset())


def _class_for(base: type, names: FrozenSet[str]) -> type:
    if not names:
        return base
    per_base = _CLASSES.setdefault(base, {})
    cls = per_base.get(names)
    if cls is None:
        attrs = {n: _make_property(n) for n in sorted(names)}
        attrs.update(
            _nc_prune_base=base, _nc_prune_names=names, __reduce_ex__=_reduce_ex,
            __module__=base.__module__, __qualname__=base.__qualname__, __doc__=base.__doc__,
        )
        cls = type(base.__name__, (base,), attrs)
        per_base[names] = cls
    return cls


def mark_pruned(module: nn.Module, name: str) -> None:
    """Make ``module.<name>`` a computed tensor."""
    module.__dict__.pop(name, None)
    module.__class__ = _class_for(base_class(module), pruned_names(module) | {name})


def unmark_pruned(module: nn.Module, name: str) -> None:
    """Undo :func:`mark_pruned` (the class goes back to the original one when nothing is left)."""
    module.__class__ = _class_for(base_class(module), pruned_names(module) - {name})


@contextmanager
def _refreshing() -> Iterator[None]:
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


def refresh(module: nn.Module, name: str, hook: MaskedTensorHook) -> None:
    """Hand the fresh tensor to a class whose ``__setattr__`` keeps copies (``nn.LSTM`` and friends)."""
    if type(module).__setattr__ is nn.Module.__setattr__ or name not in pruned_names(module):
        return
    with _refreshing():
        setattr(module, name, hook.apply_mask(module))
