"""``run_demo``: train, prune and report a small CNN in each framework, then draw what happened.

For each framework (PyTorch, then Keras when its backend is installed) the demo

1. trains the digits CNN dense and measures its test accuracy;
2. for each recipe (``4x1`` blocks to 85 %, ``2:4``), fine-tunes a copy while nc_prune prunes it on a
   schedule, and measures sparsity at every step and test accuracy at the end;
3. prints nc_prune's sparsity report, strips the pruning state and saves a plain checkpoint.

Then it prints a summary table and, when matplotlib is installed, writes three PNGs: the schedule
(planned and measured), the sparsity per layer, and the masks of one layer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..core.config import WeightPruningConfig, parse_pattern
from ..core.table import format_table
from ..core.report import SparsityReport
from ..progress import ProgressBar
from .data import Digits, load_digits_split, steps_per_epoch
from .recipe import EXCLUDED, RECIPES, DemoSizes, Recipe, make_config

FRAMEWORKS = ("torch", "keras")
MASK_LAYER = "fc1"
DENSE_LR = 3e-3
PRUNE_LR = 1e-3


class FrameworkUnavailable(RuntimeError):
    """A framework part of the demo cannot run here (the package or its nc_prune backend is missing)."""


@dataclass
class RunResult:
    """One pruning recipe run in one framework."""

    framework: str
    recipe: Recipe
    config: WeightPruningConfig
    dense_accuracy: float
    accuracy: float
    report: SparsityReport
    trace: List[Tuple[int, float]]  # (step, sparsity of the pruned layers) after each optimizer step
    mask: np.ndarray  # canonical keep-mask of MASK_LAYER
    checkpoint: str
    seconds: float

    @property
    def pruned_sparsity(self) -> float:
        """Sparsity over the layers the recipe prunes."""
        return _pruned_ratio(self.report)


@dataclass
class DemoResult:
    """Everything a demo run produced."""

    runs: List[RunResult] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)  # framework → reason
    files: List[str] = field(default_factory=list)
    plots_skipped: str = ""

    def summary(self) -> str:
        head = ("framework", "pruning", "target", "pruned layers", "whole model", "accuracy dense → pruned")
        rows = [(r.framework, f"{r.recipe.label} ({r.recipe.pruning_type})", f"{r.recipe.target:.0%}",
                 f"{r.pruned_sparsity:.1%}", f"{r.report.total_ratio:.1%}",
                 f"{r.dense_accuracy:.1%} → {r.accuracy:.1%}") for r in self.runs]
        return format_table(head, rows)


def _pruned_ratio(report: SparsityReport) -> float:
    rows = [r for r in report.rows if r.name not in EXCLUDED]
    params = sum(r.params for r in rows)
    return sum(r.zeros for r in rows) / params if params else 0.0


def _backend(name: str, data: Digits, sizes: DemoSizes, seed: int):
    if name == "torch":
        try:
            from .torch_part import TorchDemo
        except ImportError as exc:
            raise FrameworkUnavailable(f"PyTorch is not installed ({exc}); pip install torch==2.13.0") from None
        return TorchDemo(data, sizes.batch_size, seed)
    if name == "keras":
        from .keras_part import KerasDemo
        return KerasDemo(data.channels_last(), sizes.batch_size, seed)
    raise ValueError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")


def _train(backend, model, epochs: int, lr: float, desc: str, show_progress: Optional[bool],
           config: Optional[WeightPruningConfig] = None, trace: Optional[list] = None):
    n = len(backend.data.x_train)
    total = epochs * steps_per_epoch(n, backend.batch_size)
    step = [0]
    with ProgressBar(total, desc, enabled=show_progress) as bar:
        def on_step(m):
            postfix = None
            if trace is not None:
                trace.append((step[0], _pruned_ratio(SparsityReport.from_arrays(backend.weights(m)))))
                postfix = f"sparsity {trace[-1][1]:.1%}"
            step[0] += 1
            bar.update(postfix=postfix)
        return backend.fit(model, epochs, lr, config=config, on_step=on_step)


def run_framework(name: str, data: Digits, sizes: DemoSizes, out_dir: str, seed: int = 0,
                  show_progress: Optional[bool] = None, recipes: Sequence[Recipe] = RECIPES,
                  echo: Callable[[str], None] = print) -> List[RunResult]:
    """Dense training, then every recipe, in one framework. Raises :class:`FrameworkUnavailable`."""
    backend = _backend(name, data, sizes, seed)
    spe = steps_per_epoch(len(data.x_train), sizes.batch_size)
    t0 = time.monotonic()
    dense = _train(backend, backend.build(), sizes.dense_epochs, DENSE_LR, f"[{name}] dense training",
                   show_progress)
    first_acc = backend.accuracy(dense)
    # the fair baseline: the dense model trained for as many more epochs as the pruned ones
    baseline = _train(backend, dense, sizes.prune_epochs, PRUNE_LR, f"[{name}] dense baseline", show_progress)
    dense_acc = backend.accuracy(baseline)
    echo(f"[{name}] dense model: test accuracy {first_acc:.1%} after {sizes.dense_epochs} epochs, "
         f"{dense_acc:.1%} after {sizes.prune_epochs} more (the baseline the pruned models are compared "
         f"with) ({time.monotonic() - t0:.1f}s)")
    results = []
    for recipe in recipes:
        t1 = time.monotonic()
        config = make_config(recipe, spe, sizes.prune_epochs)
        trace: List[Tuple[int, float]] = []
        pruned = _train(backend, dense, sizes.prune_epochs, PRUNE_LR,
                        f"[{name}] pruning {recipe.pattern} → {recipe.target:.0%}", show_progress, config, trace)
        acc = backend.accuracy(pruned)
        report = backend.report(pruned)
        mask = backend.weights(pruned)[MASK_LAYER] != 0
        backend.finish(pruned)
        path = os.path.join(out_dir, f"{name}_{recipe.pattern.replace(':', 'in')}{backend.checkpoint_suffix}")
        backend.save(pruned, path)
        seconds = time.monotonic() - t1
        echo(f"\n[{name}] {recipe.label}, {recipe.pruning_type}, target {recipe.target:.0%}: "
             f"test accuracy {dense_acc:.1%} → {acc:.1%} ({seconds:.1f}s); saved {path}")
        echo(str(report))
        results.append(RunResult(name, recipe, config, dense_acc, acc, report, trace, mask, path, seconds))
    return results


def write_plots(result: DemoResult, out_dir: str) -> List[str]:
    """schedule.png, layer_sparsity.png and masks.png for the runs of ``result``."""
    from ..plot import plot_layer_sparsity, plot_mask, plot_schedule
    runs = result.runs
    configs = {r.recipe.pattern: r.config for r in runs if r.framework == runs[0].framework}
    measured = {f"{r.framework} {r.recipe.pattern}": r.trace[::max(1, len(r.trace) // 40)] for r in runs}
    paths = [os.path.join(out_dir, n) for n in ("schedule.png", "layer_sparsity.png", "masks.png")]
    plot_schedule(configs, paths[0], measured=measured,
                  title="Sparsity of the pruned layers (conv2, fc1) over fine-tuning")
    plot_layer_sparsity({f"{r.framework} {r.recipe.pattern}": r.report for r in runs}, paths[1],
                        title="Sparsity per layer after pruning (conv1 and the head fc2 stay dense)")
    panels = {f"{r.framework} {r.recipe.pattern} · {MASK_LAYER}": r for r in runs}
    plot_mask({k: r.mask for k, r in panels.items()}, paths[2], max_size=(32, 48), ncols=2,
              title=f"Keep-mask of {MASK_LAYER}, dark = kept (grey lines: pattern units)",
              block={k: _unit(r.recipe.pattern) for k, r in panels.items()})
    return paths


def _unit(pattern: str) -> Tuple[Any, Any]:
    kind, sizes = parse_pattern(pattern)
    return (1, sizes[1]) if kind == "N:M" else sizes


def run_demo(out_dir: str = "nc_prune_demo", quick: bool = False, frameworks: Sequence[str] = FRAMEWORKS,
             show_progress: Optional[bool] = None, seed: int = 0, plots: bool = True,
             stream: Optional[TextIO] = None) -> DemoResult:
    """Run the demo; see the module docstring. Returns what happened, prints as it goes.

    Args:
        out_dir: where checkpoints and PNGs go (created if missing).
        quick: tiny sizes (600 images, a few epochs) for a run of seconds.
        frameworks: ``"torch"`` and/or ``"keras"``; a framework that cannot run here is skipped with its
            reason in :attr:`DemoResult.skipped`.
        show_progress: ``False`` silences the progress bars; ``None`` draws them on a terminal.
        seed: seed of the split, initialisation and batch order.
        plots: write the PNGs (needs matplotlib; skipped with a note when it is missing).
        stream: where to print (standard output by default).
    """
    def echo(text: str) -> None:
        print(text, file=stream, flush=True)

    sizes = DemoSizes.quick() if quick else DemoSizes.full()
    os.makedirs(out_dir, exist_ok=True)
    data = load_digits_split(seed=seed, limit=sizes.limit)
    echo(f"nc_prune demo: scikit-learn digits, {len(data.x_train):,} train / {len(data.x_test):,} test images "
         f"(8x8), {'quick' if quick else 'full'} sizes: {sizes.dense_epochs} dense + {sizes.prune_epochs} "
         f"pruning epochs.\nLayers left dense: " + "; ".join(f"{k} ({v})" for k, v in EXCLUDED.items()))
    result = DemoResult()
    for name in frameworks:
        echo("")
        try:
            runs = run_framework(name, data, sizes, out_dir, seed, show_progress, echo=echo)
        except FrameworkUnavailable as exc:
            result.skipped[name] = str(exc)
            echo(f"[{name}] skipped: {exc}")
            continue
        result.runs += runs
        result.files += [r.checkpoint for r in runs]
    if result.runs:
        echo("\nSummary (accuracy on the held-out test images):\n" + result.summary())
    if plots and result.runs:
        try:
            result.files += write_plots(result, out_dir)
        except ImportError as exc:
            result.plots_skipped = str(exc)
            echo(f"\nplots skipped: {exc}")
    if result.files:
        echo("\nwrote " + ", ".join(result.files))
    return result
