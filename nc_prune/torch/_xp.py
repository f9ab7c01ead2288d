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
