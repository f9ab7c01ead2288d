"""SparsityReport: per-layer and total counts, table text and data form."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune import LayerSparsity, SparsityReport


def make():
    a = np.ones((4, 8))
    a[:2] = 0  # 16 of 32 zero
    b = np.ones((2, 3, 3, 3))
    b[0, 0] = 0  # 9 of 54 zero
    return SparsityReport.from_arrays({"fc": a, "conv": b}, {"fc": "4x1"})


def test_counts_and_ratios():
    r = make()
    assert [(x.name, x.shape, x.params, x.zeros, x.pattern) for x in r.rows] == [
        ("fc", (4, 8), 32, 16, "4x1"), ("conv", (2, 3, 3, 3), 54, 9, "-")]
    assert r["fc"].ratio == 0.5 and r["conv"].ratio == 9 / 54
    assert (r.total_params, r.total_zeros) == (86, 25) and r.total_ratio == 25 / 86
    assert LayerSparsity("x", (0,), 0, 0).ratio == 0.0 and SparsityReport([]).total_ratio == 0.0
    with pytest.raises(KeyError, match="no layer 'nope' in the report; layers: fc, conv"):
        r["nope"]


def test_to_dict():
    d = make().to_dict()
    assert d["total"] == {"params": 86, "zeros": 25, "ratio": 25 / 86, "unit_ratio": 0.0}
    assert d["layers"][0] == {"name": "fc", "shape": [4, 8], "params": 32, "zeros": 16, "pattern": "4x1", "ratio": 0.5,
                                 "note": "", "units": 0, "pruned_units": 0, "unit_ratio": 0.0}


def test_table_text():
    lines = str(make()).splitlines()
    assert lines[0].split() == ["layer", "shape", "params", "zeros", "sparsity", "pattern"]
    assert lines[2].split() == ["fc", "4x8", "32", "16", "50.00%", "4x1"]
    assert lines[3].split() == ["conv", "2x3x3x3", "54", "9", "16.67%", "-"]
    assert lines[-1].split() == ["total", "86", "25", "29.07%"]
    assert set(lines[1]) <= {"-", " "} and set(lines[-2]) <= {"-", " "}
    assert repr(make()) == "SparsityReport(2 layers, 29.07% sparse)"


def test_notes_say_why_a_layer_is_dense_and_get_a_column_only_when_present():
    report = SparsityReport.from_arrays({"fc": np.zeros((4, 2)), "head": np.ones((2, 4))}, {"fc": "4x1"},
                                        {"fc": "ignored: the layer is pruned", "head": "classifier head"})
    assert [r.note for r in report.rows] == ["", "classifier head"]
    lines = str(report).splitlines()
    assert lines[0].split() == ["layer", "shape", "params", "zeros", "sparsity", "pattern", "note"]
    assert lines[3].split() == ["head", "2x4", "8", "0", "0.00%", "-", "classifier", "head"]


def test_masks_give_each_pruned_layer_its_unit_ratio_beside_the_weight_ratio():
    a, b = np.ones((4, 8)), np.ones((8, 2))
    a[0] = 0  # one of 4 rows of 8
    b[:7] = 0  # 7 of 8 rows of 2
    report = SparsityReport.from_arrays({"a": a, "b": b}, {"a": "1xchannel", "b": "1xchannel"},
                                        masks={"a": a != 0, "b": b != 0})
    assert [(r.pruned_units, r.units) for r in report.rows] == [(1, 4), (7, 8)]
    assert report.total_ratio == 22 / 48 and report.total_unit_ratio == 8 / 12
    lines = str(report).splitlines()
    assert lines[0].split() == ["layer", "shape", "params", "zeros", "sparsity", "pattern", "units"]
    assert lines[-1].split() == ["total", "48", "22", "45.83%", "8/12", "(66.7%)"]
