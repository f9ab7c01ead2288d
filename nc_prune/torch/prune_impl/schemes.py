"""Pruning schemes: the structure of the sparsity, each one an engine pattern.

=====================================  ==========================  ======================================
scheme                                 engine pattern              prunes
=====================================  ==========================  ======================================
``Unstructured()``                     ``"1x1"``                   single weights
``ChannelStructured(axis=0)``          ``"1xchannel"``             whole output channels (conv filters)
``ChannelStructured(axis=1)``          ``"channelx1"``             whole input channels
``BlockStructured(block_size=(4,1))``  ``"4x1"``                   4 output rows x 1 input column blocks
``NMStructured(n=2, m=4)``             ``"2:4"``                   the 2 smallest of every 4 inputs
=====================================  ==========================  ======================================

Weights are read in the canonical layout ``(out, in, *kernel)`` — as torch stores Linear and Conv weights.
N:M counts the *pruned* weights (as coreml's ``n_m_ratio`` and INC do): ``NMStructured(1, 4)`` keeps 3 of 4.
Masks come from :func:`nc_prune.compute_masks`; whole units only, so the realised sparsity is rounded
down to a whole number of units (7 channels at 0.5 prune 3).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import torch

from ...core.config import parse_pattern
from ...core.errors import ConfigError, ConfigTypeError, PatternShapeError
from ...core.masks import compute_masks
from ...core.patterns.base import get_pattern
from ...core.registry import Registry
from ._checks import FRACTION, integer, number, store
from .registry import RegistryMixin


class PruningScheme(RegistryMixin):
    """Base of the schemes (frozen dataclasses). ``axis`` is the structured axis, ``None`` if there is none."""

    _registry: ClassVar[Registry] = Registry("pruning scheme")
    axis: ClassVar[Optional[int]] = None

    def pattern_for(self, shape: Tuple[int, ...]) -> str:
        """The engine pattern string for a weight of ``shape``."""
        raise NotImplementedError(f"{type(self).__name__} must implement pattern_for(shape)")

    @property
    def max_sparsity(self) -> float:
        """The highest sparsity the scheme can reach (``n/m`` for N:M)."""
        return 1.0

    def view_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """The shape the engine sees; schemes that need 2 dimensions reject fewer."""
        if len(shape) < 2:
            raise PatternShapeError(f"{type(self).__name__} needs a weight of 2 or more dimensions "
                                    f"(out, in, *kernel), got shape {tuple(shape)}")
        return tuple(shape)

    def check(self, name: str, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """The engine's view of a weight of ``shape``, or a :class:`PatternShapeError` naming ``name``."""
        shape = tuple(int(v) for v in shape)
        if 0 in shape:
            raise PatternShapeError(f"{name!r}: a weight of shape {shape} holds no weights, so {self!r} has nothing "
                                    f"to prune there; leave that layer unpruned (a zero-size weight needs none)")
        try:
            view = self.view_shape(shape)
            pattern = self.pattern_for(view)
        except (PatternShapeError, ConfigError) as exc:  # they cannot name the layer; say which one it is
            raise type(exc)(f"{name!r}: {exc}") from None
        reason = get_pattern({"pattern": pattern}).check_shape(name, view)
        if reason:
            raise PatternShapeError(f"{reason}; {type(self).__name__} cannot prune {name!r}")
        return view


@PruningScheme.register("unstructured")
@dataclass(frozen=True)
class Unstructured(PruningScheme):
    """Any single weight may go; tensors of any shape."""

    def pattern_for(self, shape: Tuple[int, ...]) -> str:
        return "1x1"

    def view_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(shape) if len(shape) >= 2 else (1, int(torch.Size(shape).numel()))


@PruningScheme.register("channel")
@dataclass(frozen=True)
class ChannelStructured(PruningScheme):
    """Whole slices along ``axis``: 0 = output channels (filters), 1 = input channels."""

    axis: int = 0  # type: ignore[misc]

    def __post_init__(self) -> None:
        axis = self.axis
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ConfigTypeError(f"ChannelStructured.axis must be an int (0 or 1), got {type(axis).__name__} "
                                  f"{axis!r}")
        if axis > 1:
            raise ConfigError(f"ChannelStructured(axis={axis}): axis names the output (0) or input (1) channels of "
                              f"the (out, in, *kernel) weight layout; a negative axis counts from the last "
                              f"dimension (-1 is the input axis of a Linear weight)")
        store(self, axis=int(axis))

    def pattern_for(self, shape: Tuple[int, ...]) -> str:
        axis = self.axis + len(shape) if self.axis < 0 else self.axis
        if axis not in (0, 1):
            raise ConfigError(f"ChannelStructured(axis={self.axis}) on a weight of shape {tuple(shape)}: axis "
                              f"must name the output (0) or input (1) channels of the (out, in, *kernel) layout")
        return "1xchannel" if axis == 0 else "channelx1"


@PruningScheme.register("block")
@dataclass(frozen=True)
class BlockStructured(PruningScheme):
    """Blocks of ``block_size = (rows, cols)`` of the canonical 2-D view ``(out, prod(kernel) * in)``."""

    block_size: Tuple[int, int] = (4, 1)

    def __post_init__(self) -> None:
        size = self.block_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise ConfigTypeError(f"BlockStructured.block_size must be a pair (rows, cols) of ints >= 1, e.g. (4, 1); "
                                  f"got {type(size).__name__} {size!r}")
        store(self, block_size=tuple(integer("BlockStructured", f"block_size[{i}]", v, 1) for i, v in enumerate(size)))

    def pattern_for(self, shape: Tuple[int, ...]) -> str:
        return f"{self.block_size[0]}x{self.block_size[1]}"


@PruningScheme.register("n:m")
@dataclass(frozen=True)
class NMStructured(PruningScheme):
    """``n`` of every ``m`` consecutive input weights pruned (``n=2, m=4`` keeps half)."""

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        store(self, n=integer("NMStructured", "n", self.n, 1), m=integer("NMStructured", "m", self.m, 1))
        parse_pattern(f"{self.n}:{self.m}")  # n < m, with a message saying so

    @property
    def max_sparsity(self) -> float:
        return self.n / self.m

    def pattern_for(self, shape: Tuple[int, ...]) -> str:
        return f"{self.n}:{self.m}"


def scheme_mask(scores: torch.Tensor, sparsity: float, scheme: PruningScheme, name: str = "weight") -> torch.Tensor:
    """Boolean keep-mask pruning the lowest ``scores`` to ``sparsity`` in the structure of ``scheme``.

    ``name`` names the weight in errors (a shape that does not fit ``scheme``).

    >>> scheme_mask(torch.tensor([[4., 1., 3., 2.]]), 0.5, NMStructured(2, 4)).tolist()
    [[True, False, True, False]]
    """
    view = scheme.check(name, tuple(scores.shape))
    sparsity = number("scheme_mask", "sparsity", sparsity, 0.0, 1.0, FRACTION)
    if sparsity > scheme.max_sparsity + 1e-9:
        raise ConfigError(f"sparsity {sparsity} is above what {scheme} can reach ({scheme.max_sparsity}); "
                          f"lower target_sparsity or choose another scheme")
    keep = compute_masks({name: scores.detach().reshape(view)}, scheme.pattern_for(view), sparsity,
                         scope="local", max_sparsity_ratio_per_op=1.0)[name]
    return keep.reshape(scores.shape)
