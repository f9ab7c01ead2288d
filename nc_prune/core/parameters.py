"""The ``parameters`` dict of a pruner group: each pruner, criterion and regularizer declares the keys it reads.

A class lists its keys in a ``PARAMETERS`` class attribute, ``{key: Param(default, check, doc)}``. A group's
``parameters`` may hold the keys declared by its pruner, its criterion and its regularizer, plus the keys
every group takes (:data:`COMMON`); any other key is an error naming the close match and the keys allowed,
so a typo (``reg_coef``) can no longer switch a regularizer off in silence. Resolved groups carry every
declared key, with its default where the user gave none.

>>> from nc_prune.core.parameters import Param, number
>>> class MyPruner:
...     PARAMETERS = {"alpha": Param(0.5, number(0.0, 1.0), "mixing weight")}
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import numpy as np

from .errors import ConfigError, ConfigTypeError

#: ``check(value) -> value``: raises ConfigError / ConfigTypeError with a message that names no location.
Check = Callable[[Any], Any]


@dataclass(frozen=True)
class Param:
    """One key of a group's ``parameters``: its default, its check and what it means."""

    default: Any
    check: Check
    doc: str = ""


def number(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A finite real number in the range (``inf`` and ``NaN`` are refused, whatever the bounds)."""

    def check(value: Any) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ConfigTypeError(f"must be a number, got {type(value).__name__} {value!r}")
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok or not math.isfinite(value):
            raise ConfigError(f"={value!r} is outside its range {'(' if lo_open else '['}{lo}, {hi}"
                              f"{')' if hi_open else ']'} (a finite number)")
        return float(value)

    return check


def integer(lo: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise ConfigTypeError(f"must be an integer, got {type(value).__name__} {value!r}")
        if value < lo:
            raise ConfigError(f"={value} must be >= {lo}")
        return int(value)

    return check


def choice(*values: Any) -> Check:
    def check(value: Any) -> Any:
        if value not in values:
            close = difflib.get_close_matches(str(value), [str(v) for v in values], n=1)
            raise ConfigError(f"={value!r} is not one of {', '.join(map(repr, values))}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
        return value

    return check


def boolean() -> Check:
    def check(value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigTypeError(f"must be True or False, got {type(value).__name__} {value!r}")
        return bool(value)

    return check


#: Keys every group takes: INC's default ``parameters`` is ``{"reg_coeff": 0.0}``.
COMMON: Dict[str, Param] = {
    "reg_coeff": Param(0.0, number(0.0, math.inf, hi_open=True),
                       "weight of the regularizer named by reg_type (0 turns it off)"),
}


def declared(owners: Iterable[Any], resolved: Optional[Mapping[str, Any]] = None) -> Dict[str, Param]:
    """:data:`COMMON` and the parameters of each owner (classes; ``None`` entries are skipped): its
    ``declared_parameters(resolved)`` where it has one (keys that depend on the group, e.g. only channel
    patterns take ``coupled``), else its ``PARAMETERS``."""
    out = dict(COMMON)
    for owner in owners:
        if owner is None:
            continue
        own = getattr(owner, "declared_parameters", None)
        out.update((own(resolved or {}) if callable(own) else getattr(owner, "PARAMETERS", {})) or {})
    return out


def resolve(given: Mapping[str, Any], allowed: Mapping[str, Param], where: str, owners: str) -> Dict[str, Any]:
    """``given`` checked key by key against ``allowed``, with the defaults of the keys it leaves out.

    Args:
        given: the group's ``parameters``.
        allowed: what :func:`declared` returned for the group's classes.
        where: the config location for messages (``"pruning_configs[1]"``).
        owners: the classes in words, for the unknown-key message.
    """
    out: Dict[str, Any] = {}
    for key, value in given.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            raise ConfigError(
                f"{where}: parameters has the unknown key {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; {owners} take{'s' if ' and ' not in owners else ''}: {', '.join(sorted(allowed))}. "
                f"A pruner, criterion or regularizer of your own declares its keys in a PARAMETERS class attribute"
            )
        try:
            out[key] = allowed[key].check(value)
        except (ConfigError, ConfigTypeError) as exc:
            sep = "" if str(exc).startswith("=") else " "
            raise type(exc)(f"{where}: parameters[{key!r}]{sep}{exc}") from None
    for key, param in allowed.items():
        out.setdefault(key, param.default)
    return out


def describe(pruner: Any, criterion: Any, reg: Any, pattern: Any, names: Mapping[str, Optional[str]]) -> str:
    """The classes of a group in words: ``"pruner 'basic', criterion 'snip' and regularizer 'group_lasso'"`` (the
    pattern is named when it declares parameters of its own)."""
    parts = [f"{kind} {names[kind]!r}" for kind, cls in (("pruner", pruner), ("criterion", criterion),
                                                         ("regularizer", reg), ("pattern", pattern))
             if cls is not None and (kind != "pattern" or getattr(cls, "PARAMETERS", None)
                                     or hasattr(cls, "declared_parameters"))]
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
