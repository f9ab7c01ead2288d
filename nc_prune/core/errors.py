"""Exception types raised by nc_prune.

Every error subclasses a built-in type so that ``except ValueError`` keeps working, and every
message names what was wrong (the key, layer, shape or value), the rule it broke and the fix.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


class NcPruneError(Exception):
    """Base class of every exception raised by nc_prune."""


class ConfigError(NcPruneError, ValueError):
    """A pruning config holds an unknown key or a value outside its rule."""


class ConfigTypeError(NcPruneError, TypeError):
    """A pruning config value has the wrong type (for example a string where a list is needed)."""


class RegistryError(NcPruneError, KeyError):
    """A name is missing from a registry, or is registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class PatternShapeError(NcPruneError, ValueError):
    """A weight's shape does not fit the pruning pattern."""


class NoPrunableLayerError(NcPruneError, ValueError):
    """A config selects no layer that can be pruned."""


class PruningStateError(NcPruneError, RuntimeError):
    """The pruning object was used out of order (for example a callback after ``remove()``)."""


class SavedModelError(NcPruneError, ValueError):
    """A saved pruned-model directory is missing a file, does not fit the model, or was not written by nc_prune."""


def warn_user(message: str, category: type = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside nc_prune, however deep the engine is.

    A fixed ``stacklevel`` points into nc_prune whenever a warning is raised a few calls down (from
    ``compute_masks`` or from a backend's ``prepare_pruning``); the user's line is what they can fix.
    """
    frame = sys._getframe(1)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
