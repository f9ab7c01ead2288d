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


class GlobalScoresShapeError(ShapeMismatchError, IndexError):
    """``global_unstructured``'s ``importance_scores`` for a parameter have another shape (also an ``IndexError``:
    PyTorch fails indexing the concatenated scores with the concatenated masks)."""


class DoublePruningHookError(PruningStateError, AssertionError):
    """A tensor carries two pruning hooks; only a :class:`PruningContainer` may stack methods."""


class NotPrunedError(PruningStateError, ValueError):
    """``remove`` was asked to undo pruning that was never applied (``RuntimeError`` and ``ValueError``)."""


class NotAttachedError(PruningStateError, AttributeError):
    """A method that was never applied to a tensor was asked to mask or remove one (``RuntimeError`` and
    ``AttributeError``: PyTorch's method has no ``_tensor_name`` attribute until ``apply``)."""


class EmptyContainerError(PruningStateError, IndexError, AttributeError):
    """A :class:`PruningContainer` without methods was asked for its latest one: an ``IndexError`` from
    ``compute_mask`` and an ``AttributeError`` from ``PRUNING_TYPE``, as PyTorch's container raises."""


class MissingTensorError(NcPruneError, AttributeError):
    """The module has no attribute of the given name (an ``AttributeError``)."""


class NotAModuleError(ConfigTypeError, AttributeError):
    """``module`` is not an ``nn.Module`` (a ``TypeError``, and the ``AttributeError`` PyTorch raises)."""


class NotAParameterError(ConfigTypeError):
    """The named attribute exists but is not an ``nn.Parameter`` (a ``TypeError``)."""


class NameTakenError(ConfigError, KeyError):
    """``<name>_orig`` or ``<name>_mask`` is already an attribute of the module (``ValueError`` and the ``KeyError``
    of ``register_parameter`` / ``register_buffer``)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightAssignmentError(PruningStateError, AttributeError):
    """A pruned tensor was assigned to; it is always ``<name>_orig * <name>_mask`` and cannot be set."""
