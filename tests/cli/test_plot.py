"""nc_prune.plot draws the numbers it is given: schedule curve, per-layer bars, mask pixels."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")

from nc_prune import SparsityReport, WeightPruningConfig, sparsity_at  # noqa: E402
from nc_prune.core.arrays import to_2d  # noqa: E402
from nc_prune.plot import plot_layer_sparsity, plot_mask, plot_schedule  # noqa: E402


def png_shape(path):
    import matplotlib.image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(str(path)).shape


def test_schedule_curve_is_sparsity_at(tmp_path):
    cfg = WeightPruningConfig(pattern="4x1", target_sparsity=0.8, start_step=10, end_step=50,
                              pruning_frequency=10, sparsity_decay_type="cube")
    measured = {"run": [(0, 0.0), (10, 0.3), (60, 0.8)]}
    fig = plot_schedule(cfg, tmp_path / "s.png", steps=60, measured=measured)
    ax = fig.axes[0]
    planned, points = ax.lines
    xs = planned.get_xdata()
    assert list(xs) == list(range(61))
    expected = [sparsity_at(s, 10, 50, 10, 0.8, "cube") for s in range(61)]
    assert np.allclose(planned.get_ydata(), expected)
    assert list(points.get_xdata()) == [0, 10, 60] and list(points.get_ydata()) == [0.0, 0.3, 0.8]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "planned 4x1 → 80% (cube)", "measured run"]
    h, w, _ = png_shape(tmp_path / "s.png")
    assert w > h > 200


def test_schedule_of_several_configs_and_groups():
    one = WeightPruningConfig([{"op_names": ["a"], "pattern": "2:4", "target_sparsity": 0.5},
                               {"op_names": ["b"]}], target_sparsity=0.7, end_step=20, pruning_frequency=5)
    two = {"pattern": "1x1", "target_sparsity": 0.3, "end_step": 30, "pruning_frequency": 10}
    fig = plot_schedule({"A": one, "B": two})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["planned A: group 0: 2:4 → 50% (exp)", "planned A: group 1: 4x1 → 70% (exp)",
                      "planned B: 1x1 → 30% (exp)"]
    assert fig.axes[0].lines[2].get_ydata()[-1] == pytest.approx(0.3)


def test_layer_bars_are_the_report_ratios(tmp_path):
    a = SparsityReport.from_arrays({"l1": np.array([[0, 0, 1, 1]]), "l2": np.array([[0, 1, 1, 1]])})
    b = SparsityReport.from_arrays({"l1": np.ones((1, 4)), "l2": np.zeros((1, 4))})
    fig = plot_layer_sparsity({"a": a, "b": b}, tmp_path / "bars.png")
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == [0.5, 0.25, 0.0, 1.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (total 37.5%)", "b (total 50.0%)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["l1\n1x4", "l2\n1x4"]
    png_shape(tmp_path / "bars.png")


def test_mask_pixels_are_the_canonical_2d_view(tmp_path):
    keep = np.ones((8, 3, 2, 2), dtype=bool)  # conv (out, in, kh, kw)
    keep[:, 1] = False  # input channel 1 pruned everywhere
    fig = plot_mask(keep, tmp_path / "m.png", title="conv")
    img = np.asarray(fig.axes[0].images[0].get_array())
    assert img.shape == (8, 12)
    assert np.array_equal(img, to_2d(keep).astype(img.dtype))
    assert np.array_equal(np.flatnonzero(img[0] == 0), [1, 4, 7, 10])  # input channel fastest
    assert "33% pruned" in fig.axes[0].get_title()
    png_shape(tmp_path / "m.png")


def test_mask_crop_panels_and_unit_lines():
    big = np.ones((64, 128), dtype=bool)
    big[:4, 0] = False
    small = np.zeros((4, 8), dtype=bool)
    fig = plot_mask({"big": big, "small": small}, max_size=(32, 48), ncols=2,
                    block={"big": (4, 1), "small": (1, 4)})
    ax_big, ax_small = fig.axes
    assert np.asarray(ax_big.images[0].get_array()).shape == (32, 48)
    assert "64x128, top-left 32x48 shown" in ax_big.get_title()
    assert len(ax_big.lines) == 7  # horizontal lines every 4 rows in 32 rows; none for width-1 units
    assert len(ax_small.lines) == 1  # one vertical line between the two groups of 4 columns
    assert "100% pruned" in ax_small.get_title()


def test_accepts_torch_masks():
    torch = pytest.importorskip("torch")
    mask = torch.tensor([[True, False], [False, False]])
    img = np.asarray(plot_mask(mask).axes[0].images[0].get_array())
    assert img.tolist() == [[1, 0], [0, 0]]


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'nc-prune\[plot\]'"):
        plot_mask(np.ones((2, 2)))
