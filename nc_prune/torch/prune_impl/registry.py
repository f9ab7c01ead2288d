"""Registries by string key and partial constructors, as coreai_opt's classes offer them.

A family root class (``PruneImplBase``, ``PruningScheme``, ``SparsityScheduleBase``) owns one
:class:`nc_prune.core.registry.Registry`; its subclasses are registered under string keys::

    @PruneImplBase.register("my_impl")
    class MyImpl(PruneImplBase): ...

    PruneImplBase.get_class("my_impl")        # -> MyImpl
    PruneImplBase.list_registry_keys()        # ['default', 'magnitude', 'my_impl']
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Dict, Generic, List, TypeVar

from ...core.errors import ConfigTypeError, RegistryError
from ...core.registry import Registry

T = TypeVar("T")


class RegistryMixin:
    """``register`` / ``get_class`` / ``list_registry_keys`` / ``list_registry_values`` of a class family."""

    _registry: ClassVar[Registry]

    @classmethod
    def _root(cls) -> type:
        return next(c for c in cls.__mro__ if "_registry" in c.__dict__)

    @classmethod
    def register(cls, key: str, *, override: bool = False) -> Callable[[type], type]:  # type: ignore[override]
        """A class decorator registering a subclass of this family under the string ``key``."""
        root = cls._root()
        if not isinstance(key, str) or not key:
            raise RegistryError(f"{root.__name__}.register() takes a non-empty string key, got {key!r}; "
                                f"use it as a decorator: @{root.__name__}.register('name')")

        def decorator(sub: type) -> type:
            if not (isinstance(sub, type) and issubclass(sub, root)):
                raise ConfigTypeError(f"only subclasses of {root.__name__} can be registered in its registry, "
                                      f"got {sub!r} for key {key!r}")
            return root._registry.register(key, override=override)(sub)

        return decorator

    @classmethod
    def unregister(cls, key: str) -> None:
        """Remove ``key`` (for tests, and for replacing a plug-in)."""
        cls._root()._registry.unregister(key)

    @classmethod
    def get_class(cls, key: str) -> type:
        """The class registered under ``key``; an unknown key lists the known ones."""
        return cls._root()._registry.get(key)

    @classmethod
    def list_registry_keys(cls) -> List[str]:
        """Every registered key, sorted."""
        return cls._root()._registry.names()

    @classmethod
    def list_registry_values(cls) -> List[type]:
        """The registered classes, in the order of :meth:`list_registry_keys`."""
        reg = cls._root()._registry
        return [reg.get(k) for k in reg.names()]


class PartialConstructor(Generic[T]):
    """A class with some constructor arguments filled in; call it to build an instance.

    Later arguments override earlier ones, and :meth:`with_args` adds more.
    """

    def __init__(self, cls: Callable[..., T], **kwargs: Any) -> None:
        try:
            inspect.signature(cls).bind_partial(**kwargs)
        except TypeError as exc:
            raise ConfigTypeError(f"{getattr(cls, '__name__', cls)}.with_args(): {exc}") from None
        self.cls = cls
        self.kwargs: Dict[str, Any] = dict(kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.cls(*args, **{**self.kwargs, **kwargs})

    def with_args(self, **kwargs: Any) -> "PartialConstructor[T]":
        """A new partial constructor with ``kwargs`` added (overriding equal names)."""
        return PartialConstructor(self.cls, **{**self.kwargs, **kwargs})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{getattr(self.cls, '__name__', self.cls)}.with_args({args})"
