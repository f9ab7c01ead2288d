"""OWL (Yin et al., 2024): outlier-weighted layer sparsity — prune blocks with more outliers less.

A block's *outlier ratio* is the share of its Wanda scores ``|W|·‖x‖`` above ``M`` times their mean. The
ratios are spread linearly over ``[target - λ, target + λ]`` — the block with the most outliers gets the
lowest sparsity — and shifted so that their mean is the target, so the model as a whole still loses the
asked fraction of its weights (blocks of equal size). ``M`` is ``owl_m`` (default 5) and ``λ`` is
``owl_lambda`` (default 0.08).

>>> [round(s, 3) for s in owl_sparsities([0.01, 0.02, 0.03], target=0.7, lam=0.1)]
[0.8, 0.7, 0.6]
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence


def outlier_ratio(scores: Sequence[Any], m: float) -> float:
    """The share of all entries of ``scores`` (arrays of one block's layers) above ``m`` times their mean."""
    total = sum(float(s.sum()) for s in scores)
    count = sum(math.prod(s.shape) for s in scores)
    mean = total / count if count else 0.0
    above = sum(int((s > m * mean).sum()) for s in scores)
    return above / count if count else 0.0


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> List[float]:
    """One sparsity per block from its outlier ratio: spread over ``2λ``, more outliers → less sparse, mean ``target``."""
    lo, hi = min(ratios), max(ratios)
    spread = [0.0 if hi == lo else (r - lo) / (hi - lo) * 2 * lam for r in ratios]
    mean = sum(spread) / len(spread)
    return [min(1.0, max(0.0, target + mean - s)) for s in spread]


def block_sparsities(ratios: Any, used: Sequence[int], n_blocks: int, target: float, lam: float) -> List[float]:
    """One sparsity per block: OWL's (:func:`owl_sparsities` of ``ratios[i]``) for the blocks in ``used`` — those
    holding the group's layers — and ``target`` for the others."""
    out = [target] * n_blocks
    for i, s in zip(used, owl_sparsities([ratios[i] for i in used], target, lam)):
        out[i] = s
    return out
