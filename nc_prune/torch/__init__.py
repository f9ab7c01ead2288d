"""PyTorch backend of nc_prune."""

from . import _adapter  # noqa: F401  (registers torch tensors with the core)
from .layers import TorchTarget, find_targets
from .pruner import PytorchBasePruner
from .pruning import TorchPruning, prepare_pruning, sparsity_report, strip

__all__ = ["PytorchBasePruner", "TorchPruning", "TorchTarget", "find_targets", "prepare_pruning",
           "sparsity_report", "strip"]
