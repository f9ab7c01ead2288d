"""What the demo trains and how it prunes: sizes, and one pruning config shared by both frameworks.

The demo CNN has the same layer names in PyTorch and Keras (``conv1``, ``conv2``, ``fc1``, ``fc2``), so one
:class:`~nc_prune.WeightPruningConfig` drives both. ``conv1`` (one input channel: 9 weights per filter,
which do not split into groups of 4) is excluded, and the head ``fc2`` is excluded by nc_prune's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from ..core.config import WeightPruningConfig


@dataclass(frozen=True)
class DemoSizes:
    """How much data and training a demo run uses."""

    dense_epochs: int
    prune_epochs: int
    batch_size: int = 32
    limit: Optional[int] = None  # images used (None: all 1,797)

    @classmethod
    def full(cls) -> "DemoSizes":
        return cls(dense_epochs=25, prune_epochs=12)

    @classmethod
    def quick(cls) -> "DemoSizes":
        return cls(dense_epochs=10, prune_epochs=4, limit=600)


@dataclass(frozen=True)
class Recipe:
    """One pruning run of the demo."""

    label: str
    pattern: str
    target: float
    pruning_type: str = "snip_momentum"


RECIPES: List[Recipe] = [Recipe("4x1 blocks", "4x1", 0.85), Recipe("2:4 (N:M)", "2:4", 0.5)]

#: the demo model's prunable layers that the recipes leave dense, and why
EXCLUDED = {"conv1": "first conv: 1 input channel (9 weights per filter) does not fit 2:4 and is tiny",
            "fc2": "classifier head: excluded by default"}


def schedule(steps_per_epoch: int, prune_epochs: int) -> Dict[str, int]:
    """Prune every half epoch over the first 60 % of fine-tuning, then train with fixed masks."""
    total = steps_per_epoch * prune_epochs
    frequency = max(1, steps_per_epoch // 2)
    end = max(frequency, int(total * 0.6) // frequency * frequency)
    return {"start_step": 0, "end_step": end, "pruning_frequency": frequency}


def make_config(recipe: Recipe, steps_per_epoch: int, prune_epochs: int) -> WeightPruningConfig:
    """The :class:`WeightPruningConfig` of ``recipe`` for a fine-tuning run of ``prune_epochs`` epochs.

    >>> cfg = make_config(RECIPES[0], steps_per_epoch=45, prune_epochs=12)
    >>> g = cfg.groups[0]
    >>> g["pattern"], g["target_sparsity"], g["end_step"], g["pruning_frequency"]
    ('4x1', 0.85, 308, 22)
    """
    return WeightPruningConfig(
        pruning_type=recipe.pruning_type, pattern=recipe.pattern, target_sparsity=recipe.target,
        excluded_op_names=["^conv1$"], sparsity_decay_type="cube", **schedule(steps_per_epoch, prune_epochs))
