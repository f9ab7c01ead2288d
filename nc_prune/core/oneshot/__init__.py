"""One-shot pruning from calibration data: SparseGPT, Wanda, the OWL allocation and exact row / N:M selection.

Framework-free and written against :mod:`nc_prune.core.xp`: the same functions run on numpy arrays (the
reference) and, through the torch backend's namespace, on torch tensors where they live.
"""

from .owl import block_sparsities, outlier_ratio, owl_sparsities
from .pruners import CalibrationPruner, SparseGPTPruner, WandaPruner
from .retrain_free import RetrainFreePruner, least_squares_scales, rearrange
from .select import nm_prune_mask, prune_mask, row_prune_mask
from .sparsegpt import SparseGPTResult, sparsegpt
from .stats import LayerStats
from .wanda import wanda_scores

__all__ = ["CalibrationPruner", "SparseGPTPruner", "WandaPruner", "LayerStats", "SparseGPTResult", "sparsegpt",
           "wanda_scores", "row_prune_mask", "nm_prune_mask", "prune_mask", "outlier_ratio", "owl_sparsities",
           "block_sparsities"]
