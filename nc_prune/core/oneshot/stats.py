"""What a layer's calibration inputs leave behind, accumulated batch by batch in float32.

``Σ x xᵀ`` for SparseGPT's Hessian and ``Σ x²`` per input feature for Wanda's norms, with the number of
tokens seen. The sums live on the inputs' device (torch tensors stay tensors). :meth:`LayerStats.arrays`
lists them so that data-parallel calibration can all-reduce them (sums and counts add up exactly):
``nc_prune.torch.distributed.sum_stats_`` sums them and ``tokens`` over the ranks, so :meth:`hessian` is
the mean over every rank's tokens.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ..errors import PruningStateError
from ..xp import namespace


class LayerStats:
    """Running sums of one layer's inputs ``x`` (2-D: tokens × input features)."""

    def __init__(self, name: str, hessian: bool, norms: bool) -> None:
        self.name = name
        self.want_hessian, self.want_norms = hessian, norms
        self.xtx: Optional[Any] = None
        self.sq: Optional[Any] = None
        self.tokens = 0

    def add(self, x: Any) -> None:
        """Fold in a batch of inputs, ``(tokens, in)``."""
        x = namespace(x).float32(x)
        if self.want_hessian:
            self.xtx = x.T @ x if self.xtx is None else self.xtx + x.T @ x
        if self.want_norms:
            sq = (x * x).sum(0)
            self.sq = sq if self.sq is None else self.sq + sq
        self.tokens += int(x.shape[0])

    def _require(self) -> None:
        if self.tokens == 0:
            raise PruningStateError(f"layer {self.name!r} saw no calibration input; is it used in the forward pass "
                                    f"of its block?")

    def hessian(self) -> Any:
        """``2 E[x xᵀ]`` over the tokens seen."""
        self._require()
        return self.xtx * (2.0 / self.tokens)

    def squared_norms(self) -> Any:
        """``‖x_j‖²`` of each input feature over the tokens seen."""
        self._require()
        return self.sq

    def arrays(self) -> List[Any]:
        """The sums, for a reduction across processes."""
        return [a for a in (self.xtx, self.sq) if a is not None]
