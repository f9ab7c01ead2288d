"""Moving arrays between the frameworks and numpy without importing any framework here.

The core computes in numpy. ``to_numpy`` accepts numpy arrays, anything with ``__array__`` and, through
adapters, framework tensors; ``like`` turns a numpy result back into the caller's type and device. The
torch adapter lives in ``nc_prune.torch._adapter`` and is imported only when a torch tensor shows up —
by then the caller has imported torch already.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Tuple

import numpy as np

# module prefix of the array's type → (to_numpy, like) ; filled lazily
_ADAPTERS: Dict[str, Tuple[Callable[[Any], np.ndarray], Callable[[np.ndarray, Any], Any]]] = {}
_LAZY = {"torch": "nc_prune.torch._adapter"}


def register_array_adapter(module_prefix: str, to_numpy: Callable[[Any], np.ndarray],
                           like: Callable[[np.ndarray, Any], Any]) -> None:
    """Teach the core a new array type, keyed by the top-level module its type is defined in."""
    _ADAPTERS[module_prefix] = (to_numpy, like)


def _adapter(x: Any):
    if isinstance(x, np.ndarray):
        return None
    top = type(x).__module__.split(".", 1)[0]
    if top not in _ADAPTERS and top in _LAZY:
        importlib.import_module(_LAZY[top])
    return _ADAPTERS.get(top)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of ``x`` where possible (CPU torch tensors share memory), else a copy."""
    ad = _adapter(x)
    return np.asarray(x) if ad is None else ad[0](x)


def like(result: np.ndarray, reference: Any) -> Any:
    """``result`` as the type (and device) of ``reference``."""
    ad = _adapter(reference)
    return result if ad is None else ad[1](result, reference)


def to_2d(a: np.ndarray) -> np.ndarray:
    """Canonical 2-D view: ``(O, I, *kernel)`` → ``(O, prod(kernel) * I)``, input channel fastest."""
    if a.ndim == 2:
        return a
    o = a.shape[0]
    return np.moveaxis(a, 1, -1).reshape(o, -1)


def from_2d(m: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_2d`."""
    if len(shape) == 2:
        return m.reshape(shape)
    o, i, *k = shape
    return np.moveaxis(m.reshape(o, *k, i), -1, 1)
