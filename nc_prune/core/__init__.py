"""The framework-free engine of nc_prune. Imports numpy and the standard library only."""

from .config import DEFAULTS, WeightPruningConfig, parse_pattern, resolve_pruning_type
from .errors import (ConfigError, ConfigTypeError, NcPruneError, NoPrunableLayerError, PatternShapeError,
                     PruningStateError, RegistryError, SavedModelError)
from .registry import (CRITERIA, PATTERNS, PRUNERS, REGULARIZERS, SCHEDULERS, SPARSITY_DECAYS, Registry,
                       register_criterion, register_pattern, register_pruner, register_reg, register_scheduler,
                       register_sparsity_decay)
from .patterns import LayerUnits, Pattern, PatternNInM, PatternNxM, get_pattern
from .criteria import Criterion
from .schedulers import Scheduler, get_scheduler, sparsity_at
from .regularizers import Regularizer
from .pruner import BasePruner, get_pruner_class
from .oneshot import CalibrationPruner, SparseGPTPruner, WandaPruner
from .masks import compute_masks
from .layers import LayerInfo, plan_groups, select_group
from .report import LayerSparsity, SparsityReport
from .session import PruningSession, compose_pruner_class

__all__ = [
    "DEFAULTS", "WeightPruningConfig", "parse_pattern", "resolve_pruning_type",
    "ConfigError", "ConfigTypeError", "NcPruneError", "NoPrunableLayerError", "PatternShapeError",
    "PruningStateError", "RegistryError", "SavedModelError",
    "CRITERIA", "PATTERNS", "PRUNERS", "REGULARIZERS", "SCHEDULERS", "SPARSITY_DECAYS", "Registry",
    "register_criterion", "register_pattern", "register_pruner", "register_reg", "register_scheduler",
    "register_sparsity_decay",
    "LayerUnits", "Pattern", "PatternNInM", "PatternNxM", "get_pattern",
    "Criterion", "Scheduler", "get_scheduler", "sparsity_at", "Regularizer",
    "BasePruner", "get_pruner_class", "compute_masks", "CalibrationPruner", "SparseGPTPruner", "WandaPruner",
    "LayerInfo", "plan_groups", "select_group", "LayerSparsity", "SparsityReport",
    "PruningSession", "compose_pruner_class",
]
