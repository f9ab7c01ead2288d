"""PyTorch backend of nc_prune."""

from . import _adapter  # noqa: F401  (registers torch tensors with the core)
from .layers import TorchTarget, find_targets
from .pruner import PytorchBasePruner
from .pruning import TorchPruning, prepare_pruning, sparsity_report, strip
from .compression import CompressionManager, prepare_compression
from .saving import load_pruned, read_pruned, save_pruned, saved_report
from .slim import SlimError, SlimReport, load_slimmed, load_slimmed_state, model_slim, slim
from . import prune  # noqa: E402  (drop-in for torch.nn.utils.prune)
from .prune_impl import (BlockStructured, ChannelStructured, ConstantSparsitySchedule, MagnitudePruneImpl,
                         NMStructured, PolynomialDecaySchedule, PruneImplBase, PruningScheme, SparsityScheduleBase,
                         Unstructured, attach_prune_impl, finalize_prune_impl, prune_impls, update_model_sparsity)

__all__ = ["PytorchBasePruner", "TorchPruning", "TorchTarget", "find_targets", "prepare_pruning",
           "sparsity_report", "strip", "prune", "CompressionManager", "prepare_compression",
           "model_slim", "slim", "load_slimmed", "load_slimmed_state", "SlimReport", "SlimError",
           "PruneImplBase", "MagnitudePruneImpl", "PruningScheme", "Unstructured", "ChannelStructured",
           "BlockStructured", "NMStructured", "SparsityScheduleBase", "ConstantSparsitySchedule",
           "PolynomialDecaySchedule", "attach_prune_impl", "update_model_sparsity", "finalize_prune_impl",
           "prune_impls", "save_pruned", "load_pruned", "read_pruned", "saved_report"]
