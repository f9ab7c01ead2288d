"""A drop-in for ``torch.nn.utils.prune``, run by the nc_prune engine.

Swap the import and existing code keeps working, with the same masks, buffers, state_dict keys,
outputs and gradients::

    from nc_prune.torch import prune      # was: from torch.nn.utils import prune

What changes is what users of the built-in complain about:

* ``module.weight`` is computed from ``weight_orig * weight_mask`` at every read, so it is never stale
  after ``load_state_dict``, an optimizer step or ``.to()``; a pruned module deep-copies and pickles.
* ``global_unstructured`` with ``L1Unstructured`` / ``RandomUnstructured`` selects exactly, without a
  ``torch.topk`` over the concatenation of every weight (seconds instead of tens of seconds at 33.5M).
* New methods in the same style: ``pattern_structured`` (NxM blocks, channels, N:M), ``nxm_structured``,
  ``n_m_structured`` and ``global_structured`` (global ranking of blocks / channels with per-layer bounds).

>>> import torch
>>> from torch import nn
>>> from nc_prune.torch import prune
>>> m = prune.l1_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
>>> list(m.state_dict())
['bias', 'weight_orig', 'weight_mask']
>>> int((m.weight == 0).sum())
4
"""

from .base import BasePruningMethod, PruningContainer
from .global_prune import global_structured, global_unstructured
from .methods import (CustomFromMask, Identity, L1Unstructured, LnStructured, RandomStructured, RandomUnstructured,
                      custom_from_mask, identity, is_pruned, l1_unstructured, ln_structured, random_structured,
                      random_unstructured, remove)
from .patterns import PatternStructured, n_m_structured, nxm_structured, pattern_structured

# PyTorch's private helpers under their own names, with PyTorch's behaviour and exception types, for code and
# tests written against torch.nn.utils.prune that call them.
from .base import channel_norms as _compute_norm
from .base import units_to_prune as _compute_nparams_toprune
from .base import validate_amount as _validate_pruning_amount
from .base import validate_amount_init as _validate_pruning_amount_init
from .base import validate_dim as _validate_pruning_dim
from .base import validate_structured as _validate_structured_pruning

__all__ = [
    "BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured", "L1Unstructured",
    "RandomStructured", "LnStructured", "CustomFromMask", "identity", "random_unstructured", "l1_unstructured",
    "random_structured", "ln_structured", "global_unstructured", "custom_from_mask", "remove", "is_pruned",
    "PatternStructured", "pattern_structured", "nxm_structured", "n_m_structured", "global_structured",
]
