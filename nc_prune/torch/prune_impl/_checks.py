"""Argument checks of the implementations, schemes and schedules, with messages that name the owner.

What counts as a valid number or integer is the engine's rule (:func:`nc_prune.core.config._number` and
``_integer``: a bool is neither, NaN is in no range, numpy scalars are fine); the messages name the class
and argument the user wrote, and say what to pass instead.
"""

from __future__ import annotations

from typing import Any

from ...core.config import _integer, _number
from ...core.errors import ConfigError, ConfigTypeError

FRACTION = "a fraction in [0, 1] such as 0.5"


def number(owner: str, key: str, value: Any, lo: float, hi: float, expected: str, *, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """``value`` as a float, if it is a real number in the range; else an error naming ``owner.key``.

    ``expected`` says what to pass, e.g. ``"a fraction in [0, 1] such as 0.5"``.
    """
    try:
        return _number(key, value, None, lo, hi, lo_open=lo_open, hi_open=hi_open)
    except ConfigTypeError:
        raise ConfigTypeError(f"{owner}: {key} must be {expected}, got {type(value).__name__} {value!r}") from None
    except ConfigError:
        raise ConfigError(f"{owner}: {key}={value!r} is out of range; it must be {expected}") from None


def integer(owner: str, key: str, value: Any, lo: int) -> int:
    """``value`` as an int, if it is an integer ``>= lo`` (not a bool); else an error naming ``owner.key``."""
    try:
        return _integer(key, value, None, lo)
    except ConfigTypeError:
        raise ConfigTypeError(f"{owner}: {key} must be an int >= {lo}, got {type(value).__name__} {value!r}") \
            from None
    except ConfigError:
        raise ConfigError(f"{owner}: {key}={value!r} is too small; it must be an int >= {lo}") from None


def store(frozen: Any, **values: Any) -> None:
    """Keep checked, normalised values (``np.int64(4)`` becomes ``4``) in a frozen dataclass."""
    for field, value in values.items():
        object.__setattr__(frozen, field, value)
