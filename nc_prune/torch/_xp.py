"""torch tensors for the one-shot maths (see ``nc_prune.core.xp``): the same operations, on the tensor's device."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..core.xp import register_namespace


class TorchOps:
    """The operations of :class:`nc_prune.core.xp.NumpyOps`, for torch tensors (float32 or float64)."""

    @staticmethod
    def float32(a: torch.Tensor) -> torch.Tensor:
        return a.detach().to(torch.float32) if a.dtype != torch.float64 else a.detach()

    @staticmethod
    def copy(a: torch.Tensor) -> torch.Tensor:
        return a.detach().clone()

    @staticmethod
    def zeros(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)

    @staticmethod
    def zeros_bool(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=torch.bool, device=like.device)

    @staticmethod
    def eye(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.eye(n, dtype=like.dtype, device=like.device)

    @staticmethod
    def diag(a: torch.Tensor) -> torch.Tensor:
        return torch.diagonal(a).clone()

    @staticmethod
    def add_to_diag(a: torch.Tensor, values) -> None:
        torch.diagonal(a).add_(values)

    @staticmethod
    def cholesky(a: torch.Tensor, upper: bool = False) -> Optional[torch.Tensor]:
        factor, info = torch.linalg.cholesky_ex(a, upper=upper)
        if int(info) != 0 or not bool(torch.isfinite(factor).all()):
            return None
        return factor

    @staticmethod
    def inverse_from_cholesky(low: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_inverse(low)

    @staticmethod
    def argsort_stable(a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a, dim=-1, stable=True).indices

    @staticmethod
    def mark_first(order: torch.Tensor, count: int, shape) -> torch.Tensor:
        out = torch.zeros(tuple(shape), dtype=torch.bool, device=order.device)
        if count > 0:
            out.scatter_(-1, order[..., :count], True)
        return out

    @staticmethod
    def all_finite(a: torch.Tensor) -> bool:
        return bool(torch.isfinite(a).all())

    @staticmethod
    def item(a) -> float:
        return float(a)

    # ---- local-scope masks (``nc_prune.core.patterns.local``), on the tensors' device --------------------
    @staticmethod
    def is_contiguous(a: torch.Tensor) -> bool:
        return a.is_contiguous()

    @staticmethod
    def any_nan(a: torch.Tensor) -> bool:
        if not a.is_floating_point() or not bool(torch.isnan(a.sum())):  # a sum is NaN when an entry is
            return False
        return bool(torch.isnan(a).any())

    @staticmethod
    def ones_bool(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        return torch.ones(tuple(shape), dtype=torch.bool, device=like.device)

    @staticmethod
    def to_2d(a: torch.Tensor) -> torch.Tensor:
        """``(O, I, *kernel)`` -> ``(O, prod(kernel) * I)``, input channel fastest (``core.arrays.to_2d``)."""
        return a if a.dim() == 2 else a.movedim(1, -1).reshape(a.shape[0], -1)

    @staticmethod
    def from_2d(m: torch.Tensor, shape) -> torch.Tensor:
        shape = tuple(shape)
        if len(shape) == 2:
            return m.reshape(shape)
        o, i, *k = shape
        return m.reshape(o, *k, i).movedim(-1, 1)

    @staticmethod
    def reshape(a: torch.Tensor, shape) -> torch.Tensor:
        return a.reshape(tuple(shape))

    @staticmethod
    def broadcast(a: torch.Tensor, shape) -> torch.Tensor:
        return a.expand(tuple(shape))

    @staticmethod
    def expand_dims(a: torch.Tensor, axis: int) -> torch.Tensor:
        return a.unsqueeze(axis)

    @staticmethod
    def stack(arrays, axis: int) -> torch.Tensor:
        return torch.stack(list(arrays), dim=axis)

    @staticmethod
    def count(a: torch.Tensor) -> int:
        return int(torch.count_nonzero(a))

    @staticmethod
    def count_axis(a: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.count_nonzero(a, dim=axis)

    @staticmethod
    def any_axes(a: torch.Tensor, axes) -> torch.Tensor:
        return torch.any(a, dim=tuple(axes))

    @staticmethod
    def amax(a: torch.Tensor, axes) -> torch.Tensor:
        return torch.amax(a, dim=tuple(axes))

    @staticmethod
    def maximum(a: torch.Tensor, b) -> torch.Tensor:
        return torch.clamp(a, min=b) if not isinstance(b, torch.Tensor) else torch.maximum(a, b)

    @staticmethod
    def where(cond: torch.Tensor, a, b) -> torch.Tensor:
        return torch.where(cond, a, b)

    @staticmethod
    def finfo_min(a: torch.Tensor) -> float:
        return float(torch.finfo(a.dtype).min)

    @staticmethod
    def as_uint8(a: torch.Tensor) -> torch.Tensor:
        return a.to(torch.uint8)

    @staticmethod
    def zeros_uint8(like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(like.shape, dtype=torch.uint8, device=like.device)

    @staticmethod
    def kth_smallest(a: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k``-th smallest entry (1-based) of a 1-D float tensor without NaN, exactly.

        float32: one radix digit on the device — a histogram of the top 16 bits of order-preserving integer
        keys finds the bucket holding the ``k``-th key, and ``kthvalue`` finishes among that bucket's entries
        (measured 2x faster than ``kthvalue`` over 1M entries on CPU). Other dtypes: ``kthvalue``."""
        if a.dtype != torch.float32 or a.numel() < (1 << 16):
            return torch.kthvalue(a, k).values
        bits = a.view(torch.int32)
        if bool((bits >= 0).all()):  # no sign bit set (the usual scores): the bits are the keys
            top = bits >> 16
        else:
            top = (bits ^ ((bits >> 31) & 0x7FFFFFFF)) >> 16
            top += 1 << 15
        cum = torch.bincount(top, minlength=1 << 16).cumsum_(0)
        j = int(torch.searchsorted(cum, torch.tensor([k], device=cum.device, dtype=cum.dtype)))
        below = int(cum[j - 1]) if j else 0
        return torch.kthvalue(a[top == j], k - below).values

    @staticmethod
    def first_true(mask: torch.Tensor, count: int) -> torch.Tensor:
        out = torch.zeros_like(mask)
        out[mask.nonzero().view(-1)[:count]] = True
        return out

    # ---- score updates: the same values as NumpyOps' expressions, written into ``out`` in place when given.
    # An ``out`` of another dtype (a float16 score buffer of float32 weights) gets the result rounded once,
    # as a copy of the expression's value would.
    @staticmethod
    def abs(a: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if out is None:
            return a.abs()
        if out.dtype == a.dtype:
            return torch.abs(a, out=out)
        return out.copy_(a.abs())

    @staticmethod
    def abs_mul(a: torch.Tensor, b: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if out is not None and out.dtype == torch.result_type(a, b):
            return torch.mul(a, b, out=out).abs_()
        t = torch.mul(a, b).abs_()
        return t if out is None else out.copy_(t)

    @staticmethod
    def scale(a: torch.Tensor, s: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if out is a:
            return a.mul_(s)
        t = a * s
        return t if out is None else out.copy_(t)

    @staticmethod
    def scale_add(a: torch.Tensor, s: float, b: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``a * s + b``; with ``out=a``, ``a.mul_(s).add_(b)``: ``a * s`` rounds to ``a``'s dtype as the
        expression does, then the sum is computed in the promoted dtype and rounded once into ``a``."""
        if out is a:
            return a.mul_(s).add_(b)
        t = a * s + b
        return t if out is None else out.copy_(t)


register_namespace("torch", TorchOps)
