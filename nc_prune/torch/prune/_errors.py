"""Exception types of the ``torch.nn.utils.prune`` compatible API.

Each one is an nc_prune error *and* the built-in type ``torch.nn.utils.prune`` raises in the same
situation, so ``except AssertionError`` / ``pytest.raises(IndexError)`` written against PyTorch keep
working after swapping the import, while ``except nc_prune.NcPruneError`` catches all of them.
"""

from __future__ import annotations

from ...core.errors import ConfigError, ConfigTypeError, NcPruneError, PatternShapeError, PruningStateError


class AmountError(ConfigError):
    """``amount`` is outside its range, or asks for more units than the tensor has (a ``ValueError``)."""


class AmountTypeError(ConfigTypeError):
    """``amount`` is neither an int nor a float (a ``TypeError``)."""


class PruningDimError(NcPruneError, IndexError):
    """``dim`` does not index the tensor being pruned (an ``IndexError``)."""


class ShapeMismatchError(PatternShapeError, AssertionError):
    """``importance_scores`` or a mask does not have the parameter's shape (``ValueError`` and ``AssertionError``)."""


class DoublePruningHookError(PruningStateError, AssertionError):
    """A tensor carries two pruning hooks; only a :class:`PruningContainer` may stack methods."""


class NotPrunedError(PruningStateError, ValueError):
    """``remove`` was asked to undo pruning that was never applied (``RuntimeError`` and ``ValueError``)."""


class MissingTensorError(NcPruneError, AttributeError):
    """The module has no attribute of the given name (an ``AttributeError``)."""


class NotAParameterError(ConfigTypeError):
    """The named attribute exists but is not an ``nn.Parameter`` (a ``TypeError``)."""


class WeightAssignmentError(PruningStateError, AttributeError):
    """A pruned tensor was assigned to; it is always ``<name>_orig * <name>_mask`` and cannot be set."""
