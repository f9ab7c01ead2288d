"""The nc_prune demo: train and prune a small CNN on scikit-learn's digits in PyTorch and Keras.

Run it with ``nc-prune demo`` (or ``python -m nc_prune demo``); ``--quick`` takes seconds. From Python:

>>> from nc_prune.demo import run_demo
>>> result = run_demo("demo_out", quick=True, frameworks=["torch"], show_progress=False)  # doctest: +SKIP
>>> print(result.summary())  # doctest: +SKIP
"""

from .data import Digits, load_digits_split
from .recipe import RECIPES, DemoSizes, Recipe, make_config
from .runner import DemoResult, FrameworkUnavailable, RunResult, run_demo

__all__ = ["DemoResult", "DemoSizes", "Digits", "FrameworkUnavailable", "RECIPES", "Recipe", "RunResult",
           "load_digits_split", "make_config", "run_demo"]
