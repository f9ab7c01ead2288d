"""Pruning patterns: which groups of weights are pruned together."""

from .base import LayerUnits, Pattern, get_pattern
from .nxm import PatternNxM
from .ninm import PatternNInM

__all__ = ["LayerUnits", "Pattern", "PatternNxM", "PatternNInM", "get_pattern"]
