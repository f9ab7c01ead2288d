"""The few array operations the one-shot maths needs, for numpy here and for other array types by adapter.

The one-shot methods (SparseGPT, Wanda, the row and N:M selections) are written once, against
``ns = namespace(x)``. For numpy arrays that is :class:`NumpyOps`; the torch backend registers
``TorchOps`` (``nc_prune.torch._xp``), so the same code runs on torch tensors on their own device — no
numpy round trip — and a test proves both give the same masks. Only what the maths uses is here, with
the semantics it relies on: sorts are stable (ties go to the lower position), ``cholesky`` returns None
instead of raising when the matrix is not positive definite.

>>> import numpy as np
>>> ns = namespace(np.zeros(3))
>>> ns.argsort_stable(np.array([[2.0, 1.0, 1.0]])).tolist()
[[1, 2, 0]]
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Optional, Sequence

import numpy as np

_NAMESPACES: Dict[str, Any] = {}
_LAZY = {"torch": "nc_prune.torch._xp"}


def register_namespace(module_prefix: str, ops: Any) -> None:
    """Teach the one-shot maths a new array type, keyed by the top-level module its type is defined in."""
    _NAMESPACES[module_prefix] = ops


def namespace(x: Any) -> Any:
    """The operations for arrays of ``x``'s type."""
    if isinstance(x, np.ndarray):
        return NumpyOps
    top = type(x).__module__.split(".", 1)[0]
    if top not in _NAMESPACES and top in _LAZY:
        importlib.import_module(_LAZY[top])
    if top not in _NAMESPACES:
        raise TypeError(f"no array operations registered for {type(x).__module__}.{type(x).__name__}")
    return _NAMESPACES[top]


class NumpyOps:
    """The reference: numpy arrays, float32 or float64."""

    @staticmethod
    def float32(a):
        return np.asarray(a, dtype=np.float32)

    @staticmethod
    def copy(a):
        return np.array(a, copy=True)

    @staticmethod
    def zeros(shape: Sequence[int], like) -> np.ndarray:
        return np.zeros(tuple(shape), dtype=like.dtype)

    @staticmethod
    def zeros_bool(shape: Sequence[int], like) -> np.ndarray:
        return np.zeros(tuple(shape), dtype=bool)

    @staticmethod
    def eye(n: int, like) -> np.ndarray:
        return np.eye(n, dtype=like.dtype)

    @staticmethod
    def diag(a) -> np.ndarray:
        return np.diagonal(a).copy()

    @staticmethod
    def add_to_diag(a, values) -> None:
        idx = np.arange(a.shape[0])
        a[idx, idx] += values

    @staticmethod
    def cholesky(a, upper: bool = False) -> Optional[np.ndarray]:
        try:
            low = np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(low).all():
            return None
        return low.T.copy() if upper else low

    @staticmethod
    def inverse_from_cholesky(low) -> np.ndarray:
        """``A⁻¹`` from the lower Cholesky factor of ``A``."""
        inv_low = np.linalg.inv(low)
        return inv_low.T @ inv_low

    @staticmethod
    def argsort_stable(a) -> np.ndarray:
        return np.argsort(a, axis=-1, kind="stable")

    @staticmethod
    def mark_first(order, count: int, shape) -> np.ndarray:
        """A bool array of ``shape`` that is True at the first ``count`` indices of each row of ``order``."""
        out = np.zeros(shape, dtype=bool)
        if count > 0:
            np.put_along_axis(out, order[..., :count], True, axis=-1)
        return out

    @staticmethod
    def all_finite(a) -> bool:
        return bool(np.isfinite(a).all())

    @staticmethod
    def item(a) -> float:
        return float(a)

    # ---- local-scope masks (``nc_prune.core.patterns.local``) ----------------------------------------
    @staticmethod
    def is_contiguous(a) -> bool:
        return bool(np.asarray(a).flags.c_contiguous)

    @staticmethod
    def any_nan(a) -> bool:
        return bool(np.isnan(a).any())

    @staticmethod
    def ones_bool(shape: Sequence[int], like) -> np.ndarray:
        return np.ones(tuple(shape), dtype=bool)

    @staticmethod
    def to_2d(a) -> np.ndarray:
        from .arrays import to_2d
        return to_2d(np.asarray(a))

    @staticmethod
    def from_2d(m, shape) -> np.ndarray:
        from .arrays import from_2d
        return from_2d(m, tuple(shape))

    @staticmethod
    def reshape(a, shape) -> np.ndarray:
        return np.reshape(a, tuple(shape))

    @staticmethod
    def broadcast(a, shape) -> np.ndarray:
        return np.broadcast_to(a, tuple(shape))

    @staticmethod
    def expand_dims(a, axis: int) -> np.ndarray:
        return np.expand_dims(a, axis)

    @staticmethod
    def stack(arrays, axis: int) -> np.ndarray:
        return np.stack(arrays, axis=axis)

    @staticmethod
    def count(a) -> int:
        return int(np.count_nonzero(a))

    @staticmethod
    def count_axis(a, axis: int) -> np.ndarray:
        return np.count_nonzero(a, axis=axis)

    @staticmethod
    def any_axes(a, axes) -> np.ndarray:
        return np.any(a, axis=tuple(axes))

    @staticmethod
    def amax(a, axes) -> np.ndarray:
        return np.max(a, axis=tuple(axes))

    @staticmethod
    def maximum(a, b) -> np.ndarray:
        return np.maximum(a, b)

    @staticmethod
    def where(cond, a, b) -> np.ndarray:
        return np.where(cond, a, b)

    @staticmethod
    def finfo_min(a) -> float:
        return float(np.finfo(a.dtype).min)

    @staticmethod
    def as_uint8(a) -> np.ndarray:
        return a.astype(np.uint8)

    @staticmethod
    def zeros_uint8(like) -> np.ndarray:
        return np.zeros(like.shape, dtype=np.uint8)

    @staticmethod
    def kth_smallest(a, k: int):
        """The ``k``-th smallest entry (1-based) of a 1-D array without NaN."""
        return np.partition(a, k - 1)[k - 1]

    @staticmethod
    def first_true(mask, count: int) -> np.ndarray:
        """``mask`` (1-D bool) with only its first ``count`` True entries left True."""
        out = np.zeros(mask.shape, dtype=bool)
        out[np.flatnonzero(mask)[:count]] = True
        return out

    # ---- score updates (``Criterion.update``): plain expressions here; ``out`` is where a namespace that
    # writes in place (torch) puts the result, and numpy ignores it, so its results are what ``score`` gives
    @staticmethod
    def abs(a, out=None):
        return abs(a)

    @staticmethod
    def abs_mul(a, b, out=None):
        return abs(a * b)

    @staticmethod
    def scale(a, s: float, out=None):
        return a * s

    @staticmethod
    def scale_add(a, s: float, b, out=None):
        """``a * s + b``."""
        return a * s + b
