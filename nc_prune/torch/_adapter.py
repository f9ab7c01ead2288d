"""numpy ↔ torch conversion for the core (see ``nc_prune.core.arrays``)."""

from __future__ import annotations

import numpy as np
import torch

from ..core.arrays import register_array_adapter

_NUMPY_UNSUPPORTED = {torch.bfloat16, torch.float16}


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """Share memory for CPU tensors numpy understands; copy otherwise (GPU, bfloat16)."""
    t = t.detach()
    if t.dtype in _NUMPY_UNSUPPORTED:
        t = t.float()
    return t.cpu().numpy()


def numpy_like(result: np.ndarray, reference: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(result)).to(reference.device)


register_array_adapter("torch", tensor_to_numpy, numpy_like)
