"""Attach an implementation to every matching layer of a model, step their schedules, finalize them."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from torch import nn
from torch.nn.utils import parametrize

from ...core.errors import ConfigError, ConfigTypeError, NoPrunableLayerError, PatternShapeError, PruningStateError
from .base import PruneImplBase

DEFAULT_TYPES: Tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ImplSpec = Union[str, type, Callable[[], PruneImplBase]]


def _constructor(impl: ImplSpec, kwargs: Dict[str, Any]) -> Callable[[], PruneImplBase]:
    if isinstance(impl, PruneImplBase):
        raise ConfigTypeError("attach_prune_impl() needs a constructor, not an instance: every layer gets its own "
                              "mask. Pass the class with its arguments, a registry key, or Impl.with_args(...)")
    if isinstance(impl, str):
        impl = PruneImplBase.get_class(impl)
    if not callable(impl):
        raise ConfigTypeError(f"impl must be a PruneImplBase subclass, a registry key or a partial constructor, "
                              f"got {type(impl).__name__}")
    return lambda: impl(**kwargs)


def _regexes(key: str, patterns: Optional[Sequence[str]]) -> List[re.Pattern]:
    """The compiled regexes of ``op_names`` / ``excluded_op_names``; an error names the one that is wrong."""
    if patterns is None:
        return []
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise ConfigTypeError(f"attach_prune_impl(): {key} is a list of regexes; got {type(patterns).__name__} "
                              f"{patterns!r}. Wrap a single one in a list: {key}=[{patterns!r}]")
    compiled = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise ConfigTypeError(f"attach_prune_impl(): {key}[{i}] must be a regex string, got "
                                  f"{type(pattern).__name__} {pattern!r}")
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"attach_prune_impl(): {key}[{i}] = {pattern!r} is not a valid regular expression: "
                              f"{exc}. Fix it, or pass re.escape(name) to match a layer name literally") from None
    return compiled


def _selected(model: nn.Module, types: Sequence[type], op_names: List[re.Pattern],
              excluded: List[re.Pattern], tensor_name: str) -> List[Tuple[str, nn.Module]]:
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, tuple(types)) or not isinstance(getattr(module, tensor_name, None), nn.Parameter) \
                and not parametrize.is_parametrized(module, tensor_name):
            continue
        if op_names and not any(p.search(name) for p in op_names):
            continue
        if any(p.search(name) for p in excluded):
            continue
        out.append((name, module))
    return out


def prune_impls(model: nn.Module) -> Iterator[Tuple[str, PruneImplBase]]:
    """``(layer.tensor, implementation)`` for every implementation attached in ``model``."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor, plist in module.parametrizations.items():
                for p in plist:
                    if isinstance(p, PruneImplBase):
                        yield (f"{name}.{tensor}" if name else tensor), p


def attach_prune_impl(model: nn.Module, impl: ImplSpec, *, module_types: Sequence[type] = DEFAULT_TYPES,
                      op_names: Optional[Sequence[str]] = None, excluded_op_names: Sequence[str] = (),
                      tensor_name: str = "weight", **kwargs: Any) -> Dict[str, PruneImplBase]:
    """Register a fresh implementation on ``tensor_name`` of every matching layer.

    Args:
        model: the model, changed in place.
        impl: a :class:`PruneImplBase` subclass, its registry key (``"default"``), or a partial
            constructor (``MagnitudePruneImpl.with_args(...)``).
        module_types: layer classes to consider (Linear and Conv by default).
        op_names / excluded_op_names: regexes searched in the layer names (``re.search``).
        tensor_name: which parameter of each layer to mask.
        kwargs: constructor arguments (``target_sparsity``, ``pruning_scheme``, ``schedule``).

    Returns:
        ``{layer name: implementation}``. Nothing is attached when any layer is rejected.

    >>> from nc_prune.torch.prune_impl import Unstructured
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> sorted(attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured()))
    ['0', '2']
    >>> int((net[0].weight == 0).sum())
    32
    """
    wanted, excluded = _regexes("op_names", op_names), _regexes("excluded_op_names", excluded_op_names)
    make = _constructor(impl, kwargs)
    chosen = _selected(model, module_types, wanted, excluded, tensor_name)
    if not chosen:
        layers = ", ".join(f"{n} ({type(m).__name__})" for n, m in model.named_modules() if n)[:400] or "none"
        raise NoPrunableLayerError(f"attach_prune_impl() matched no layer with a {tensor_name!r} parameter "
                                   f"(module_types={[t.__name__ for t in module_types]}, op_names={op_names}, "
                                   f"excluded_op_names={list(excluded_op_names)}). Layers: {layers}")
    built = {}
    for name, module in chosen:
        if parametrize.is_parametrized(module, tensor_name) and any(
                isinstance(p, PruneImplBase) for p in module.parametrizations[tensor_name]):
            raise PruningStateError(f"layer {name!r} already has a pruning implementation on {tensor_name!r}; "
                                    f"finalize_prune_impl() it first")
        inst = make()
        if not isinstance(inst, PruneImplBase):
            raise ConfigTypeError(f"the constructor built a {type(inst).__name__}, not a PruneImplBase")
        try:
            inst.pruning_scheme.check(name, tuple(getattr(module, tensor_name).shape))
        except PatternShapeError as exc:
            raise PatternShapeError(f"attach_prune_impl(): {exc}. To attach to the other layers, leave this one out "
                                    f"with excluded_op_names=[{'^' + re.escape(name) + '$'!r}]") from None
        built[name] = inst
    for name, module in chosen:
        parametrize.register_parametrization(module, tensor_name, built[name])
    return built


def update_model_sparsity(model: nn.Module, step_count: int) -> Dict[str, float]:
    """:meth:`PruneImplBase.update_sparsity` on every attached implementation; returns the new sparsities."""
    impls = list(prune_impls(model))
    missing = [name for name, impl in impls if impl.schedule is None]
    if missing:
        raise PruningStateError(f"update_model_sparsity(): {missing} have no schedule; set impl.schedule or "
                                f"attach with schedule=...")
    for _, impl in impls:
        impl.update_sparsity(step_count)
    return {name: impl.sparsity for name, impl in impls}


def finalize_prune_impl(model: nn.Module, tensor_name: Optional[str] = None) -> List[str]:
    """Bake the masks into the weights and drop the implementations; returns the finalized tensors.

    The parameter objects stay the same, so an optimizer built before keeps working.
    """
    done = []
    for name, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        for tensor, plist in list(module.parametrizations.items()):
            if tensor_name is not None and tensor != tensor_name:
                continue
            kinds = [isinstance(p, PruneImplBase) for p in plist]
            if not any(kinds):
                continue
            if not all(kinds):
                raise ConfigError(f"{name}.{tensor} also carries other parametrizations "
                                  f"({[type(p).__name__ for p in plist]}); remove those first")
            parametrize.remove_parametrizations(module, tensor, leave_parametrized=True)
            done.append(f"{name}.{tensor}" if name else tensor)
    return done
