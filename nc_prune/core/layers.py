"""Which layers a pruner group takes: INC's selection rules, shared by every backend.

1. ``pruning_op_types``: a layer is a candidate when one of the strings is a substring of one of its
   type names (``"Conv"`` matches ``Conv2d`` and ``Conv1D``). Backends add aliases: a Keras ``Dense``
   also answers to ``"Linear"``.
2. ``op_names``: regexes searched in the layer name (``re.search``); an empty list takes every candidate.
3. ``excluded_op_names``: regexes that remove layers again.
4. The classifier head — the last linear layer of the model — is left out unless an ``op_names``
   regex matches its whole name.

A layer claimed by two groups, and a group that selects nothing, are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

from .errors import ConfigError, NoPrunableLayerError, warn_user
from .patterns.base import get_pattern


@dataclass(frozen=True)
class LayerInfo:
    """What the selection rules need to know of one prunable weight.

    Attributes:
        name: the layer's path (``"encoder.0.fc1"``; for a layer with several weights, ``"mha/query"``).
        type_names: class name first, then aliases matched by ``pruning_op_types``.
        shape: the weight's shape in the canonical layout ``(out, in, *kernel)``.
        is_linear: a fully connected layer (the head is the last of these).
    """

    name: str
    type_names: Tuple[str, ...]
    shape: Tuple[int, ...]
    is_linear: bool = False
    extra: Dict[str, object] = field(default_factory=dict, compare=False, hash=False)


def head_name(layers: Sequence[LayerInfo]) -> str | None:
    linear = [l.name for l in layers if l.is_linear]
    return linear[-1] if linear else None


def _describe(group: Mapping, index: int) -> str:
    return (f"pruning_configs[{index}] (op_names={group['op_names']}, pruning_op_types={group['pruning_op_types']}, "
            f"excluded_op_names={group['excluded_op_names']})")


def select_group(layers: Sequence[LayerInfo], group: Mapping, index: int) -> List[LayerInfo]:
    """The layers one group selects, before shape checks."""
    types = group["pruning_op_types"]
    names = group["op_names"]
    excluded = group["excluded_op_names"]
    head = head_name(layers)
    out = []
    for layer in layers:
        if not any(t in tn for t in types for tn in layer.type_names):
            continue
        if names and not any(re.search(p, layer.name) for p in names):
            continue
        if any(re.search(p, layer.name) for p in excluded):
            continue
        if layer.name == head and not any(re.fullmatch(p, layer.name) for p in names):
            continue
        out.append(layer)
    return out


def plan_groups(layers: Sequence[LayerInfo], groups: Sequence[Mapping]) -> List[List[LayerInfo]]:
    """Layers of every group, shape-checked against the group's pattern.

    Raises:
        NoPrunableLayerError: a group selects nothing, or no layer of a group fits its pattern.
        ConfigError: a layer is selected by two groups.
    """
    claimed: Dict[str, int] = {}
    plans = []
    for i, group in enumerate(groups):
        chosen = select_group(layers, group, i)
        if not chosen:
            sample = ", ".join(f"{l.name} ({l.type_names[0]})" for l in layers[:12]) or "none"
            more = f" and {len(layers) - 12} more" if len(layers) > 12 else ""
            head = head_name(layers)
            raise NoPrunableLayerError(
                f"{_describe(group, i)} selects no layer. Prunable layers of the model: {sample}{more}. "
                f"Fix op_names / pruning_op_types / excluded_op_names"
                + (f" (the head {head!r} is excluded unless an op_names regex matches its full name)" if head else "")
            )
        pattern = get_pattern(group)
        fitting = []
        for layer in chosen:
            if layer.name in claimed:
                raise ConfigError(
                    f"layer {layer.name!r} is selected by pruning_configs[{claimed[layer.name]}] and "
                    f"pruning_configs[{i}]; each layer may belong to one group — narrow op_names or add "
                    f"excluded_op_names"
                )
            claimed[layer.name] = i
            reason = pattern.check_shape(layer.name, layer.shape)
            if reason:
                warn_user(f"{reason}; layer {layer.name!r} is left dense")
            else:
                fitting.append(layer)
        if not fitting:
            raise NoPrunableLayerError(
                f"{_describe(group, i)}: none of the selected layers fits pattern {group['pattern']!r}: "
                + ", ".join(f"{l.name} {l.shape}" for l in chosen)
            )
        plans.append(fitting)
    return plans
