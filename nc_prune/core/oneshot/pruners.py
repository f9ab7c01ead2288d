"""One-shot pruners fed by calibration inputs: ``pruning_type="sparse_gpt"`` and ``"wanda"``.

They share the engine's second lifecycle. The optimizer-step one (scores from gradients, masks at pruning
steps) does not fit methods that need each layer's *inputs* and write back *new weights*; these get,
from the backend's calibration pipeline, per layer:

1. :meth:`CalibrationPruner.new_stats` — the statistics to collect (:class:`~.stats.LayerStats`);
2. the layer's inputs, batch by batch, folded into the statistics by the backend;
3. :meth:`CalibrationPruner.prune_layer` — the mask and the new weights, written back through the glue
   (``_canonical_weight`` / ``_write_weight`` / ``_set_mask``), in the weights' own array type.

The backend decides *when* (block by block, each block fed the pruned outputs of the one before) and
*where* (the weights' device); the maths (:mod:`.sparsegpt`, :mod:`.wanda`, :mod:`.select`) is written once,
against :mod:`nc_prune.core.xp`.

Method settings are validated ``parameters`` (see :mod:`nc_prune.core.parameters`): ``block_size`` (128) and
``dampening_frac`` (0.01) and ``mask_selection`` (``"block"``) for SparseGPT; ``sparsity_allocation`` (``"uniform"`` or ``"owl"``) with
``owl_m`` (5) and ``owl_lambda`` (0.08) for both.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from ..config import parse_pattern
from ..parameters import Param, choice, integer, number
from ..pruner import BasePruner
from ..registry import register_pruner
from ..xp import namespace
from .select import prune_mask
from .sparsegpt import SELECTIONS, sparsegpt
from .stats import LayerStats
from .wanda import wanda_scores

ALLOCATION = {
    "sparsity_allocation": Param("uniform", choice("uniform", "owl"),
                                 "how the target spreads over blocks: evenly, or by outliers (OWL)"),
    "owl_m": Param(5.0, number(0.0, math.inf, lo_open=True, hi_open=True),
                   "OWL: a score counts as an outlier above owl_m times its block's mean"),
    "owl_lambda": Param(0.08, number(0.0, 0.5), "OWL: block sparsities spread over target ± owl_lambda"),
}


class CalibrationPruner(BasePruner):
    """Base of the one-shot pruners that learn from calibration inputs (see the module doc)."""

    calibrated = True
    one_shot_only = True
    needs_hessian = False
    needs_norms = True
    PARAMETERS: Dict[str, Param] = dict(ALLOCATION)
    method = "calibration"

    @classmethod
    def config_error(cls, resolved: Mapping[str, Any]) -> Optional[str]:
        kind, sizes = parse_pattern(resolved["pattern"])
        if not (kind == "NxM" and tuple(sizes) == (1, 1)) and kind != "N:M":
            return (f"pruning_type={resolved['pruning_type']!r} prunes single weights: pattern '1x1' (each output row "
                    f"to the target) or N:M (e.g. '2:4'); pattern {resolved['pattern']!r} is not one of them")
        if kind == "N:M" and resolved["parameters"].get("sparsity_allocation") == "owl":
            return (f"sparsity_allocation='owl' spreads the target unevenly over blocks, which pattern "
                    f"{resolved['pattern']!r} cannot follow (every group loses {sizes[0]} of {sizes[1]}); use "
                    f"pattern '1x1' with OWL, or the uniform allocation with N:M")
        if kind == "N:M" and abs(resolved["target_sparsity"] - sizes[0] / sizes[1]) > 1e-9:
            return (f"pruning_type={resolved['pruning_type']!r} with pattern {resolved['pattern']!r} prunes {sizes[0]} "
                    f"of every {sizes[1]} weights: set target_sparsity={sizes[0] / sizes[1]:g}")
        return None

    @property
    def nm(self) -> Optional[Tuple[int, int]]:
        kind, sizes = parse_pattern(self.config["pattern"])
        return tuple(sizes) if kind == "N:M" else None

    def is_pruning_step(self, step: Optional[int] = None) -> bool:
        return False  # pruned by the calibration pipeline only, never at an optimizer step

    def is_done(self, step: Optional[int] = None) -> bool:
        return True

    def new_stats(self, name: str) -> LayerStats:
        return LayerStats(name, self.needs_hessian, self.needs_norms)

    def outlier_scores(self, name: str, stats: LayerStats) -> Any:
        """The Wanda scores OWL counts outliers in (for every calibration pruner)."""
        return wanda_scores(self._float_weight(name), stats.squared_norms())

    def _float_weight(self, name: str) -> Any:
        w = self._canonical_weight(name)
        return namespace(w).float32(w)

    def prune_layer(self, name: str, stats: LayerStats, sparsity: float) -> Dict[str, Any]:
        """Prune ``name`` to ``sparsity`` (of each row; an N:M pattern fixes it) and write it back; what it took."""
        raise NotImplementedError

    def _write(self, name: str, weight: Any, pruned: Any) -> None:
        self._write_weight(name, weight)
        self._set_mask(name, ~pruned)


@register_pruner("sparse_gpt")
class SparseGPTPruner(CalibrationPruner):
    """SparseGPT: masks from ``w²/[H⁻¹]ᵢᵢ²`` and the kept weights updated to make up for the pruned ones."""

    needs_hessian = True
    needs_norms = False
    method = "SparseGPT"
    PARAMETERS = dict(ALLOCATION, **{
        "block_size": Param(128, integer(1), "columns per lazy-update block"),
        "dampening_frac": Param(0.01, number(0.0, 1.0, lo_open=True), "diagonal dampening, of mean(diag H)"),
        "mask_selection": Param("block", choice(*SELECTIONS),
                                "1x1: each column block as a whole (the paper's), or each row to the target"),
    })

    def new_stats(self, name: str) -> LayerStats:
        own = self.config["parameters"]["sparsity_allocation"] == "owl"  # OWL counts outliers in Wanda scores
        return LayerStats(name, True, own)

    def prune_layer(self, name, stats, sparsity):
        params = self.config["parameters"]
        result = sparsegpt(self._float_weight(name), stats.hessian(), sparsity, self.nm, params["block_size"],
                           params["dampening_frac"], params["mask_selection"])
        self._write(name, result.weight, result.pruned)
        return {"dampening": result.dampening, "retries": result.retries}


@register_pruner("wanda")
class WandaPruner(CalibrationPruner):
    """Wanda: masks from ``|W|·‖x‖₂`` within each row or N:M group; kept weights unchanged."""

    method = "Wanda"

    def prune_layer(self, name, stats, sparsity):
        w = self._float_weight(name)
        pruned = prune_mask(wanda_scores(w, stats.squared_norms()), sparsity, self.nm)
        w[pruned] = 0
        self._write(name, w, pruned)
        return {}
