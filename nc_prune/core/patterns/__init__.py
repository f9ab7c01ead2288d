"""Pruning patterns: which groups of weights are pruned together."""

from .base import LayerUnits, Pattern, get_pattern
from .nxm import PatternNxM
from .ninm import PatternNInM
from .heads import PatternHeads

__all__ = ["LayerUnits", "Pattern", "PatternNxM", "PatternNInM", "PatternHeads", "get_pattern"]
