"""The sparsity report of a Keras model — one way, whether a callback is live or the model was just loaded.

A model being pruned carries its plan in the :class:`~nc_prune.keras.optimizer.PruningOptimizer` (the config
and the pruned weights' masks). The report re-derives each layer's group and, for the dense ones, the reason
from that config with the core's selection rules, so ``callback.report()``, ``sparsity_report(model)`` and
``nc-prune report model.keras`` print the same table, as the torch side does from its plan record.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Tuple

import keras

from ..core import records
from ..core.config import WeightPruningConfig
from ..core.layers import LayerInfo, plan_layers
from ..core.report import SparsityReport
from .discovery import PrunableWeight, find_prunable_weights
from .optimizer import PruningOptimizer
from .pruner import to_numpy


def find_pruning_optimizer(optimizer: Any) -> Optional[PruningOptimizer]:
    """The :class:`PruningOptimizer` in ``optimizer`` (itself, or inside a ``LossScaleOptimizer``), else None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer if isinstance(optimizer, PruningOptimizer) else None


def saved_plan(wrapper: PruningOptimizer, infos: List[LayerInfo]) -> Tuple[Dict[str, Dict[str, Any]],
                                                                            Dict[str, Dict[str, Any]]]:
    """``(pruned layer records, dense layer records)`` the wrapper's saved config gives these layers."""
    config = WeightPruningConfig.from_dict(wrapper.pruning_config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its layer warnings were shown when it was prepared
        plan = plan_layers(infos, config.groups)
    layers = records.layer_records(config.groups, [[layer.name for layer in g] for g in plan.groups])
    return layers, {n: {"note": why} for n, why in plan.dense().items()}


def planned_report(weights: List[PrunableWeight], wrapper: Optional[PruningOptimizer]) -> SparsityReport:
    """Zeros of every prunable weight, with the plan the wrapper carries (none: a plain table)."""
    arrays = {w.name: w.layout.to_canonical(to_numpy(w.variable)) for w in weights}
    if wrapper is None or wrapper.pruning_config is None or not wrapper.built:
        return SparsityReport.from_arrays(arrays)
    layers, dense = saved_plan(wrapper, [w.info() for w in weights])
    by_name = {w.name: w for w in weights}
    masks = {n: by_name[n].layout.to_canonical(to_numpy(slot.mask)).astype(bool)
             for n, slot in wrapper.slots.items() if n in by_name}
    return records.report(arrays, layers, dense, masks)


def model_report(model: keras.Model) -> SparsityReport:
    """:func:`planned_report` of a model and the wrapper its optimizer may be."""
    return planned_report(find_prunable_weights(model), find_pruning_optimizer(getattr(model, "optimizer", None)))
