"""Exact selection: counts, ties, and global ranking with per-layer bounds against a brute-force reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from _core_reference import ceil_count, floor_count, reference_global, reference_local
from nc_prune import ConfigError, compute_masks
from nc_prune.core.selection import (as_score_array, count_at_least, count_for_ratio, global_counts, lowest_mask,
                                     select_global)


@pytest.mark.parametrize("n, ratio, floor_, ceil_", [
    (100, 0.57, 57, 57), (100, 0.29, 29, 29), (10, 0.25, 2, 3), (7, 0.5, 3, 4), (1000, 0.9, 900, 900),
    (3, 1 / 3, 1, 1), (0, 0.5, 0, 0), (5, 0.0, 0, 0), (5, 1.0, 5, 5), (49, 0.98, 48, 49),
])
def test_counts_tolerate_binary_rounding(n, ratio, floor_, ceil_):
    assert count_for_ratio(n, ratio) == floor_
    assert count_at_least(n, ratio) == ceil_


def test_lowest_mask_ties_go_to_lower_index():
    s = np.array([2.0, 1.0, 1.0, 0.0, 1.0, 3.0])
    assert lowest_mask(s, 0).tolist() == [False] * 6
    assert lowest_mask(s, 2).tolist() == [False, True, False, True, False, False]
    assert lowest_mask(s, 3).tolist() == [False, True, True, True, False, False]
    assert lowest_mask(s, 6).all() and lowest_mask(s, 99).all()


def test_score_array_folds_negative_zero_and_rejects_nan():
    a = as_score_array(np.array([[-0.0, 1.0]], dtype=np.float32), "x")
    assert a.dtype == np.float32 and a.shape == (2,) and not np.signbit(a[0])
    assert as_score_array(np.array([1, 2], dtype=np.int64)).dtype == np.float32
    assert as_score_array(np.array([1.0])).dtype == np.float64
    with pytest.raises(ConfigError, match="scores of layer 'enc.fc' contain NaN"):
        as_score_array(np.array([0.0, np.nan]), "enc.fc")


def _random_layers(rng, dtype, kind):
    sizes = rng.integers(1, 60, size=rng.integers(1, 6))
    out = []
    for n in sizes:
        if kind == "ties":
            s = rng.integers(-3, 4, size=n).astype(dtype)
        elif kind == "special":
            s = rng.choice(np.array([-0.0, 0.0, np.inf, -np.inf, 1.0, -1.0, 0.5], dtype=dtype), size=n)
        else:
            s = (rng.standard_normal(n) * 10).astype(dtype)
        out.append(s)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["random", "ties", "special"])
def test_select_global_equals_brute_force(dtype, kind):
    rng = np.random.default_rng(7 + (dtype == np.float64) + 10 * ["random", "ties", "special"].index(kind))
    for _ in range(60):
        scores = _random_layers(rng, dtype, kind)
        sizes = [s.size for s in scores]
        lo = [int(rng.integers(0, n // 3 + 1)) for n in sizes]
        hi = [int(rng.integers(l, n + 1)) for l, n in zip(lo, sizes)]
        k = int(rng.integers(0, sum(sizes) + 1))
        got = select_global([as_score_array(s) for s in scores], k, lo, hi)
        want = reference_global(scores, k, lo, hi)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
        assert sum(int(g.sum()) for g in got) == min(max(k, sum(lo)), sum(hi))
        counts, _ = global_counts([as_score_array(s) for s in scores], k, lo, hi)
        assert counts == [int(w.sum()) for w in want]
        for c, l, h in zip(counts, lo, hi):
            assert l <= c <= h


def test_select_global_mixed_precision():
    """A float32 layer next to a float64 one is ranked in float64 without losing order."""
    a = np.array([1.0, 1.0 + 2 ** -20, 3.0], dtype=np.float32)
    b = np.array([1.0 + 2 ** -40, 2.0], dtype=np.float64)
    got = select_global([as_score_array(a), as_score_array(b)], 2, [0, 0], [3, 2])
    assert got[0].tolist() == [True, False, False] and got[1].tolist() == [True, False]


@pytest.mark.parametrize("pattern_dtype", [np.float32, np.float64])
def test_compute_masks_1x1_global_with_bounds_equals_reference(pattern_dtype):
    rng = np.random.default_rng(11)
    for trial in range(25):
        shapes = [(int(rng.integers(1, 9)), int(rng.integers(1, 9))) for _ in range(int(rng.integers(2, 5)))]
        if trial % 2:
            scores = {f"l{j}": rng.integers(0, 5, size=s).astype(pattern_dtype) for j, s in enumerate(shapes)}
        else:
            scores = {f"l{j}": rng.random(s).astype(pattern_dtype) * (j + 1) for j, s in enumerate(shapes)}
        target = float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]))
        lo_r = float(rng.choice([0.0, 0.1, 0.2]))
        hi_r = float(rng.choice([0.5, 0.8, 0.98]))
        sizes = [int(np.prod(s)) for s in shapes]
        lo = [ceil_count(n, lo_r) for n in sizes]
        hi = [floor_count(n, hi_r) for n in sizes]
        k = floor_count(sum(sizes), target)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            masks = compute_masks(scores, "1x1", target, "global", max_sparsity_ratio_per_op=hi_r,
                                  min_sparsity_ratio_per_op=lo_r)
        # a warning exactly when the bounds cannot meet the target (max too low, or min too high)
        off_target = k > sum(hi) or k < sum(lo)
        assert [str(w.message).startswith("target sparsity") for w in caught] == ([True] if off_target else [])
        want = reference_global(list(scores.values()), k, lo, hi)
        for (name, m), w, n, l, h in zip(masks.items(), want, sizes, lo, hi):
            assert m.dtype == bool and m.shape == scores[name].shape
            assert np.array_equal(~m.reshape(-1), w), (trial, name)
            assert l <= int((~m).sum()) <= h


def test_compute_masks_local_equals_reference_per_layer():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = {f"l{j}": rng.integers(0, 4, size=(int(rng.integers(1, 7)), 4)).astype(np.float32) for j in range(3)}
        target = float(rng.choice([0.0, 0.25, 0.5, 0.75, 0.9]))
        masks = compute_masks(scores, "1x1", target, "local", max_sparsity_ratio_per_op=0.8)
        for name, s in scores.items():
            count = min(floor_count(s.size, target), floor_count(s.size, 0.8))
            assert np.array_equal(~masks[name].reshape(-1), reference_local(s, count)), name


def test_global_bounds_are_honoured_exactly():
    # layer "low" has every lowest score; max 0.5 caps it and the rest spills over in score order
    low = np.arange(100, dtype=np.float64).reshape(10, 10) / 1000
    high = np.arange(100, dtype=np.float64).reshape(10, 10) + 1
    masks = compute_masks({"low": low, "high": high}, "1x1", 0.4, max_sparsity_ratio_per_op=0.5)
    assert int((~masks["low"]).sum()) == 50 and int((~masks["high"]).sum()) == 30
    assert np.array_equal(~masks["high"].reshape(-1), np.arange(100) < 30)
    # min 0.2 lifts "high" even though all its scores are larger
    masks = compute_masks({"low": low, "high": high}, "1x1", 0.4, min_sparsity_ratio_per_op=0.2)
    assert int((~masks["high"]).sum()) == 20 and int((~masks["low"]).sum()) == 60
    assert np.array_equal(~masks["low"].reshape(-1), np.arange(100) < 60)


def test_target_above_what_bounds_allow_warns_and_prunes_the_maximum():
    s = {"a": np.arange(10.0).reshape(2, 5), "b": np.arange(10.0).reshape(2, 5)}
    with pytest.warns(UserWarning, match=r"target sparsity 0.9 needs 18 pruned units but "
                                         r"max_sparsity_ratio_per_op=0.5 allows 10; pruning 10"):
        masks = compute_masks(s, "1x1", 0.9, max_sparsity_ratio_per_op=0.5)
    assert int((~masks["a"]).sum()) == 5 and int((~masks["b"]).sum()) == 5


def test_large_layer_global_counts_exact():
    """Radix select over many units: the count is exact and the threshold splits as the sort does."""
    rng = np.random.default_rng(5)
    scores = {"a": rng.standard_normal((300, 200)).astype(np.float32),
              "b": rng.integers(0, 50, size=(256, 128)).astype(np.float32),
              "c": rng.standard_normal((64, 64))}
    masks = compute_masks(scores, "1x1", 0.6, max_sparsity_ratio_per_op=1.0)
    total = sum(s.size for s in scores.values())
    assert sum(int((~m).sum()) for m in masks.values()) == floor_count(total, 0.6)
    allv = np.concatenate([s.reshape(-1).astype(np.float64) for s in scores.values()])
    pruned = np.concatenate([~m.reshape(-1) for m in masks.values()])
    assert allv[pruned].max() <= allv[~pruned].min()
