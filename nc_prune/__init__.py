"""nc_prune: prune PyTorch and Keras 3 models with one engine and INC-compatible configs.

>>> import numpy as np, nc_prune
>>> masks = nc_prune.compute_masks({"fc": np.arange(8.0).reshape(2, 4)}, "2:4", 0.5)
>>> int(masks["fc"].sum())
4

Backends live in ``nc_prune.torch`` and ``nc_prune.keras`` and are imported on demand.
"""

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = list(_core_all) + ["__version__"]
