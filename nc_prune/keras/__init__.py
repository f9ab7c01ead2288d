"""Pruning for Keras 3 models (any Keras backend), on the same core as the PyTorch backend.

>>> from nc_prune import WeightPruningConfig
>>> from nc_prune.keras import prepare_pruning, strip
>>> # model.compile(...); cb = prepare_pruning(model, WeightPruningConfig(pattern="4x1", target_sparsity=0.8,
>>> #                                                                   start_step=0, end_step=500))
>>> # model.fit(x, y, callbacks=[cb]); print(cb.report()); strip(model)
>>> # slimmed, slim_report = model_slim(model)   # a new model without the pruned channels and heads

Import this module before ``keras.models.load_model`` on a model saved mid-pruning: it registers the
:class:`PruningOptimizer` that carries the masks. See ``docs/keras.md``.
"""

from __future__ import annotations

import keras as _keras

_major = int(str(getattr(_keras, "__version__", "0")).split(".")[0] or 0)
if _major < 3:  # pragma: no cover - depends on the installed Keras
    raise ImportError(
        f"nc_prune.keras needs Keras 3 (found keras {getattr(_keras, '__version__', '?')}); "
        f"pip install 'keras>=3' and unset TF_USE_LEGACY_KERAS"
    )

from .api import prepare_pruning, sparsity_report, strip  # noqa: E402
from .callback import PruningCallback  # noqa: E402
from .discovery import PrunableWeight, find_prunable_weights  # noqa: E402
from .layout import Layout, get_layout  # noqa: E402
from .oneshot import OneShotPruning, prune_once  # noqa: E402
from .optimizer import PruningOptimizer  # noqa: E402
from .pruner import KerasBasePruner  # noqa: E402
from .slim import SlimError, SlimReport, model_slim, slim  # noqa: E402

__all__ = [
    "prepare_pruning", "strip", "sparsity_report", "PruningCallback", "PruningOptimizer", "KerasBasePruner",
    "PrunableWeight", "find_prunable_weights", "Layout", "get_layout", "model_slim", "slim", "SlimReport", "SlimError",
    "prune_once", "OneShotPruning",
]
