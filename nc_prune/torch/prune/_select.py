"""Exact top-k selection that matches ``torch.topk`` without running it on huge inputs.

``torch.nn.utils.prune`` picks the units to prune with ``torch.topk(x, k)``. For a global prune over
tens of millions of weights that sort dominates the run time. Here the k-th value comes from the engine's
exact radix select (:func:`nc_prune.core.selection.global_counts`), which never concatenates the tensors.
When exactly ``k`` entries are ``<=`` that value the answer is unique, so it is the one ``torch.topk``
gives. Only when several entries share the k-th value and not all of them fit does the choice depend on
``torch.topk``'s internal tie order; then ``torch.topk`` itself runs, so the result is still PyTorch's —
with ``sorted=False``, which picks the same set without sorting it (about 4x faster at 33.5M entries).
Above ~10M entries such ties at the cut are common in float32, so both paths matter.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

from ...core.selection import global_counts
from .._adapter import tensor_to_numpy


def _scores(flat: torch.Tensor, largest: bool) -> np.ndarray:
    a = tensor_to_numpy(flat)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return -a if largest else a


def _by_topk(flat: Sequence[torch.Tensor], k: int, largest: bool) -> List[torch.Tensor]:
    joined = torch.cat(list(flat))
    picked = torch.zeros(joined.numel(), dtype=torch.bool, device=joined.device)
    # sorted=False skips sorting the k picked values; the picked set is the same as with sorted=True
    picked[torch.topk(joined, k=k, largest=largest, sorted=False).indices] = True
    return [p.to(f.device) for p, f in zip(torch.split(picked, [f.numel() for f in flat]), flat)]


def topk_masks(values: Sequence[torch.Tensor], k: int, largest: bool = False) -> List[torch.Tensor]:
    """Flat boolean masks of the entries ``torch.topk(torch.cat(values), k, largest=largest)`` picks.

    Args:
        values: tensors of any shape; each is read flattened (row-major), in the given order.
        k: how many entries to pick in total, ``0 <= k``.
        largest: pick the largest instead of the smallest.

    Returns:
        One flat ``torch.bool`` tensor per input, on the input's device.

    >>> [m.tolist() for m in topk_masks([torch.tensor([3., 1.]), torch.tensor([2., 5.])], 2)]
    [[False, True], [True, False]]
    """
    flat = [v.detach().reshape(-1) for v in values]
    sizes = [f.numel() for f in flat]
    total = sum(sizes)
    if k <= 0 or k >= total:
        return [torch.full((n,), k > 0, dtype=torch.bool, device=f.device) for n, f in zip(sizes, flat)]
    scores = [_scores(f, largest) for f in flat]
    _, kth = global_counts([s for s in scores if s.size], k, [0] * sum(1 for s in scores if s.size),
                           [s.size for s in scores if s.size])
    picked = [np.less_equal(s, kth) for s in scores]
    if sum(int(np.count_nonzero(p)) for p in picked) != k:
        # Ties straddle the cut (or NaNs are present): only torch.topk knows which entries it takes.
        return _by_topk(flat, k, largest)
    return [torch.from_numpy(p).to(f.device) for p, f in zip(picked, flat)]
