"""One generic registry and the named registries of the engine.

Users extend nc_prune by decorating a class or function::

    >>> from nc_prune import register_criterion
    >>> @register_criterion("l2")
    ... class L2:
    ...     needs_grad = False
    ...     def __init__(self, config): pass
    ...     def score(self, weight, grad, previous): return weight * weight

A second registration under the same name is an error unless ``override=True`` is passed; looking up
an unknown name raises :class:`~nc_prune.core.errors.RegistryError` listing the known names.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

from .errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object map filled by a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Return a decorator that stores its argument under ``name``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._items and not override and self._items[name] is not obj:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered as {self._items[name]!r}; "
                    f"pick another name or pass override=True to replace it"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name lists the known ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: Any) -> str:
        known = sorted(self._items)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(known)}.{hint}"

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and by users replacing a plug-in)."""
        self.get(name)
        del self._items[name]

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


PATTERNS: Registry[Any] = Registry("pattern")
PRUNERS: Registry[Any] = Registry("pruner")
CRITERIA: Registry[Any] = Registry("criterion")
SCHEDULERS: Registry[Any] = Registry("scheduler")
SPARSITY_DECAYS: Registry[Any] = Registry("sparsity decay")
REGULARIZERS: Registry[Any] = Registry("regularizer")


def register_pattern(name: str, *, override: bool = False):
    """Register a :class:`~nc_prune.core.patterns.base.Pattern` subclass under ``name``."""
    return PATTERNS.register(name, override=override)


def register_pruner(name: str, *, override: bool = False):
    """Register a :class:`~nc_prune.core.pruner.BasePruner` subclass; ``pruning_type=name`` selects it."""
    return PRUNERS.register(name, override=override)


def register_criterion(name: str, *, override: bool = False):
    """Register a criterion class; ``pruning_type=name`` (and ``name + "_progressive"``) select it."""
    return CRITERIA.register(name, override=override)


def register_scheduler(name: str, *, override: bool = False):
    """Register a scheduler class (``"oneshot"`` and ``"iterative"`` ship with nc_prune)."""
    return SCHEDULERS.register(name, override=override)


def register_sparsity_decay(name: str, *, override: bool = False):
    """Register a decay curve ``f(progress, init, target) -> sparsity``; ``sparsity_decay_type=name`` selects it."""
    return SPARSITY_DECAYS.register(name, override=override)


def register_reg(name: str, *, override: bool = False):
    """Register a regularizer class; ``reg_type=name`` selects it."""
    return REGULARIZERS.register(name, override=override)
