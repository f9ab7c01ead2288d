"""Pictures of pruning: the sparsity schedule, per-layer sparsity bars, and the mask of one layer.

matplotlib is an optional extra (``pip install 'nc-prune[plot]'``), imported only when a function here
is called. Every function returns a ``matplotlib.figure.Figure`` and, given ``path``, also writes it as
PNG. No pyplot state is touched, so this works in scripts, tests and servers alike.

>>> from nc_prune import WeightPruningConfig
>>> from nc_prune.plot import plot_schedule
>>> cfg = WeightPruningConfig(pattern="4x1", target_sparsity=0.8, start_step=0, end_step=90,
...                           pruning_frequency=10)
>>> fig = plot_schedule(cfg)
>>> fig.axes[0].get_ylabel()
'sparsity'
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .core import arrays
from .core.report import SparsityReport
from .core.schedulers import sparsity_at
from .core.session import as_config

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]
Measured = Mapping[str, Sequence[Tuple[int, float]]]

_KEEP_COLOUR = "#1f4e79"
_PRUNED_COLOUR = "#f2f2f2"


def _figure(size: Tuple[float, float]) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("nc_prune.plot needs matplotlib: pip install 'nc-prune[plot]' "
                          "(or pip install matplotlib)") from exc
    return Figure(figsize=size, layout="constrained")


def _save(fig: "Figure", path: Optional[PathLike]) -> "Figure":
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120)
    return fig


def plot_schedule(config: Any, path: Optional[PathLike] = None, *, steps: Optional[int] = None,
                  measured: Optional[Measured] = None, title: str = "Sparsity schedule") -> "Figure":
    """The target sparsity of every pruner group over training steps.

    Args:
        config: a :class:`~nc_prune.WeightPruningConfig` (or a dict of its keys), or
            ``{label: config}`` to compare several.
        path: write the figure here as PNG.
        steps: last step on the x axis (default: a little past the latest ``end_step``).
        measured: ``{label: [(step, sparsity), ...]}`` — sparsity measured during training, drawn as
            points over the planned curve.
        title: figure title.
    """
    configs = config if _is_labelled(config) else {"": config}
    lines = []  # (label, resolved group)
    for name, cfg in configs.items():
        groups = as_config(cfg).groups
        for i, g in enumerate(groups):
            label = f"{g['pattern']} → {g['target_sparsity']:.0%} ({g['sparsity_decay_type']})"
            if len(groups) > 1:
                label = f"group {i}: {label}"
            lines.append((f"{name}: {label}" if name and name != g["pattern"] else label, g))
    last = max(g["end_step"] for _, g in lines)
    steps = steps if steps is not None else max(int(last * 1.15) + 1, last + 2)
    fig = _figure((7.0, 3.6))
    ax = fig.add_subplot()
    xs = np.arange(steps + 1)
    for label, g in lines:
        ys = [sparsity_at(int(s), g["start_step"], g["end_step"], g["pruning_frequency"], g["target_sparsity"],
                          g["sparsity_decay_type"]) for s in xs]
        ax.step(xs, ys, where="post", linewidth=2, label=f"planned {label}")
    for (label, points), marker in zip((measured or {}).items(), itertools.cycle("ox+s^v")):
        if points:
            px, py = zip(*points)
            ax.plot(px, py, linestyle="none", marker=marker, markersize=5, markerfacecolor="none",
                    color="black", alpha=0.6, label=f"measured {label}")
    ax.set_xlim(0, steps)
    ax.set_ylim(0, 1.0)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_xlabel("training step (optimizer steps)")
    ax.set_ylabel("sparsity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_layer_sparsity(reports: Union[SparsityReport, Mapping[str, SparsityReport]],
                        path: Optional[PathLike] = None, *, title: str = "Sparsity per layer") -> "Figure":
    """Horizontal bars: the sparsity of every layer, one bar per report when several are given.

    Args:
        reports: a :class:`~nc_prune.SparsityReport`, or ``{label: report}`` to compare runs.
        path: write the figure here as PNG.
        title: figure title.
    """
    if isinstance(reports, SparsityReport):
        reports = {"": reports}
    if not reports:
        raise ValueError("plot_layer_sparsity needs at least one SparsityReport")
    names = []
    for rep in reports.values():
        names += [r.name for r in rep.rows if r.name not in names]
    n_rep = len(reports)
    height = 0.8 / n_rep
    fig = _figure((7.0, 1.0 + 0.45 * len(names) * max(1, n_rep * 0.7)))
    ax = fig.add_subplot()
    ypos = np.arange(len(names))
    for j, (label, rep) in enumerate(reports.items()):
        ratios = [_ratio(rep, n) for n in names]
        y = ypos - 0.4 + height * (j + 0.5)
        text = f"{label} (total {rep.total_ratio:.1%})" if label else f"total {rep.total_ratio:.1%}"
        bars = ax.barh(y, ratios, height=height * 0.9, label=text)
        ax.bar_label(bars, labels=[f"{r:.0%}" for r in ratios], padding=2, fontsize="small")
    ax.set_yticks(ypos, [f"{n}\n{_shape(reports, n)}" for n in names], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.xaxis.set_major_formatter(_percent())
    ax.set_xlabel("sparsity (share of zero weights)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_mask(mask: Any, path: Optional[PathLike] = None, *, title: str = "",
              max_size: Tuple[int, int] = (64, 96), ncols: int = 3,
              block: Union[None, Tuple[int, int], Mapping[str, Tuple[int, int]]] = None) -> "Figure":
    """Heatmap of keep-masks in the 2-D view the patterns work on.

    A mask (numpy, torch, ...) in the canonical layout ``(out, in, *kernel)`` is drawn as
    ``(out, prod(kernel) * in)`` — rows are outputs, columns inputs with the input channel fastest — so
    ``4x1`` blocks show as vertical bars of 4 and ``2:4`` as 2 gaps in every 4 columns. Kept weights are
    dark, pruned ones light. Big layers are cropped to their top-left ``max_size`` so the structure
    stays visible.

    Args:
        mask: one boolean mask (True = keep), or ``{title: mask}`` for panels side by side. A weight
            works too: its non-zero entries count as kept.
        path: write the figure here as PNG.
        title: figure title.
        max_size: ``(rows, columns)`` drawn at most.
        ncols: panels per row.
        block: ``(rows, columns)`` of the pattern's unit (``(4, 1)`` for ``"4x1"``, ``(1, 4)`` for
            ``"2:4"``), or ``{title: block}`` per panel: faint lines are drawn on the unit boundaries.
    """
    panels = dict(mask) if isinstance(mask, Mapping) else {"": mask}
    if not panels:
        raise ValueError("plot_mask needs at least one mask")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig = _figure((4.2 * ncols + 0.6, 4.0 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap([_PRUNED_COLOUR, _KEEP_COLOUR])
    for ax, (label, m) in zip(axes, panels.items()):
        full = arrays.to_2d(np.asarray(arrays.to_numpy(m)) != 0)
        rows, cols = min(full.shape[0], max_size[0]), min(full.shape[1], max_size[1])
        shown = full[:rows, :cols]
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        unit = block.get(label) if isinstance(block, Mapping) else block
        if unit is not None:
            _unit_lines(ax, shown.shape, unit)
        crop = "" if shown.shape == full.shape else f", top-left {rows}x{cols} shown"
        kept = full.mean() if full.size else 0.0
        head = f"{label}\n" if label else ""
        ax.set_title(f"{head}{full.shape[0]}x{full.shape[1]}{crop}\n{1 - kept:.0%} pruned", fontsize="small")
        ax.set_xlabel("input column")
        ax.set_ylabel("output row")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _unit_lines(ax: Any, shape: Tuple[int, int], unit: Tuple[int, int]) -> None:
    for size, extent, line in ((unit[0], shape[0], ax.axhline), (unit[1], shape[1], ax.axvline)):
        if isinstance(size, int) and 1 < size < extent:
            for pos in range(size, extent, size):
                line(pos - 0.5, color="#9a9a9a", linewidth=0.5)


def _is_labelled(config: Any) -> bool:
    """``{label: config}`` rather than one config given as a dict of its keys."""
    from .core.config import DEFAULTS
    return (isinstance(config, Mapping) and bool(config)
            and not any(k in DEFAULTS or k == "pruning_configs" for k in config))


def _ratio(report: SparsityReport, name: str) -> float:
    try:
        return report[name].ratio
    except KeyError:
        return 0.0


def _shape(reports: Mapping[str, SparsityReport], name: str) -> str:
    for rep in reports.values():
        for r in rep.rows:
            if r.name == name:
                return "x".join(map(str, r.shape))
    return ""


def _percent():
    from matplotlib.ticker import PercentFormatter
    return PercentFormatter(1.0, decimals=0)
