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


register_namespace("torch", TorchOps)
