"""The one-shot maths on numpy (the reference): selections, SparseGPT, Wanda, OWL, and their configs."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from nc_prune import ConfigError, PruningStateError, WeightPruningConfig
from nc_prune.core.oneshot import (LayerStats, nm_prune_mask, outlier_ratio, owl_sparsities, prune_mask,
                                   row_prune_mask, sparsegpt, wanda_scores)
from nc_prune.core.coupling import Slice
from nc_prune.core.oneshot import least_squares_scales, rearrange
from nc_prune.core.oneshot.retrain_free import objective
from nc_prune.core.selection import count_for_ratio


def correlated(rows=16, cols=32, tokens=400, seed=0):
    """A layer whose inputs are correlated and have a few loud features — what makes the methods differ."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    scale = np.ones(cols)
    scale[:3] = 15.0
    x = (rng.standard_normal((tokens, cols)) @ mix) * scale
    w = rng.standard_normal((rows, cols))
    stats = LayerStats("fc", hessian=True, norms=True)
    stats.add(x)
    return w, x, stats


def error(x, w, w_hat):
    return float(np.linalg.norm(x @ w.T - x @ w_hat.T) / np.linalg.norm(x @ w.T))


# ---- selection ---------------------------------------------------------------------------------
def test_row_selection_prunes_exactly_count_per_row_ties_to_the_lower_column():
    s = np.array([[3., 1., 2., 1., 5.], [0., 0., 0., 0., 0.]])
    assert row_prune_mask(s, 2).astype(int).tolist() == [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]
    assert not row_prune_mask(s, 0).any() and row_prune_mask(s, 5).all()


def test_nm_selection_prunes_n_of_every_m():
    s = np.array([[4., 3., 2., 1., 1., 1., 9., 9.]])
    assert nm_prune_mask(s, 2, 4).astype(int).tolist() == [[0, 0, 1, 1, 1, 1, 0, 0]]
    assert nm_prune_mask(s, 1, 4).astype(int).tolist() == [[0, 0, 0, 1, 1, 0, 0, 0]]
    assert prune_mask(np.random.rand(3, 10), 0.57, None).sum(1).tolist() == [count_for_ratio(10, 0.57)] * 3


# ---- SparseGPT ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.5, 0.57, 0.7, 0.9])
def test_sparsegpt_row_selection_prunes_exactly_floor_of_each_row_across_blocks(sparsity):
    w, x, stats = correlated(cols=40)
    out = sparsegpt(w, stats.hessian(), sparsity, block_size=16, selection="row")  # 16 + 16 + 8 columns
    assert out.pruned.sum(axis=1).tolist() == [count_for_ratio(40, sparsity)] * 16
    assert (out.weight[out.pruned] == 0).all() and (out.weight[~out.pruned] != 0).all()
    assert out.retries == 0 and w.shape == out.weight.shape


@pytest.mark.parametrize("sparsity", [0.5, 0.57, 0.7, 0.9])
def test_sparsegpt_block_selection_prunes_exactly_floor_of_each_column_block_and_of_the_layer(sparsity):
    w, x, stats = correlated(cols=40)
    out = sparsegpt(w, stats.hessian(), sparsity, block_size=16)  # the default; 16 + 16 + 8 columns
    per_block = [int(out.pruned[:, a:b].sum()) for a, b in ((0, 16), (16, 32), (32, 40))]
    edges = [count_for_ratio(16 * c, sparsity) for c in (0, 16, 32, 40)]
    assert per_block == [edges[i + 1] - edges[i] for i in range(3)]
    assert int(out.pruned.sum()) == count_for_ratio(16 * 40, sparsity)
    rows = out.pruned.sum(axis=1)
    assert rows.min() < rows.max()  # rows compete: not each row to the target
    assert (out.weight[out.pruned] == 0).all() and (out.weight[~out.pruned] != 0).all()


def test_sparsegpt_refuses_an_unknown_selection():
    w, _, stats = correlated()
    with pytest.raises(ValueError, match=r"selection must be one of \('block', 'row'\), got 'rows'"):
        sparsegpt(w, stats.hessian(), 0.5, selection="rows")


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_sparsegpt_n_m_prunes_n_of_every_group(n, m):
    w, _, stats = correlated(cols=32)
    out = sparsegpt(w, stats.hessian(), n / m, nm=(n, m), block_size=12)  # rounded down to a multiple of M
    assert (out.pruned.reshape(16, 32 // m, m).sum(-1) == n).all()


def test_sparsegpt_reconstructs_the_outputs_better_than_wanda_and_magnitude():
    w, x, stats = correlated()
    errs = {}
    for nm, sparsity in ((None, 0.5), ((2, 4), 0.5), (None, 0.7)):
        mag, wan = w.copy(), w.copy()
        mag[prune_mask(np.abs(w), sparsity, nm)] = 0
        wan[prune_mask(wanda_scores(w, stats.squared_norms()), sparsity, nm)] = 0
        gpt = sparsegpt(w, stats.hessian(), sparsity, nm=nm).weight
        errs[nm, sparsity] = [round(error(x, w, a), 3) for a in (gpt, wan, mag)]
        assert errs[nm, sparsity][0] < errs[nm, sparsity][1] < errs[nm, sparsity][2]
    assert errs[None, 0.5][0] < 0.5 * errs[None, 0.5][2]  # well under half magnitude's error


def test_the_weight_passed_in_is_not_changed():
    w, _, stats = correlated()
    before = w.copy()
    sparsegpt(w, stats.hessian(), 0.5)
    assert np.array_equal(w, before)


def test_a_singular_hessian_gets_more_dampening_and_says_so_never_nan():
    w, _, _ = correlated(cols=8)
    stats = LayerStats("fc", hessian=True, norms=False)
    stats.add(np.ones((50, 8)))  # rank one: every input the same
    out = sparsegpt(w, stats.hessian(), 0.5, dampening_frac=1e-12)
    assert out.retries > 0 and np.isfinite(out.weight).all()
    assert int(out.pruned.sum()) == 64


def test_dead_inputs_are_pruned_and_inputs_with_nan_are_refused():
    w, x, _ = correlated(cols=8)
    x[:, 3] = 0
    stats = LayerStats("fc", hessian=True, norms=False)
    stats.add(x)
    out = sparsegpt(w, stats.hessian(), 0.5, selection="row")
    assert out.pruned[:, 3].all() and out.pruned.sum(1).tolist() == [4] * 16
    x[0, 0] = np.nan
    bad = LayerStats("fc", hessian=True, norms=False)
    bad.add(x)
    with pytest.raises(PruningStateError, match=r"not positive definite.*calibration inputs are degenerate"):
        sparsegpt(w, bad.hessian(), 0.5)
    with pytest.raises(PruningStateError, match="layer 'fc' saw no calibration input"):
        LayerStats("fc", hessian=True, norms=False).hessian()


# ---- OWL --------------------------------------------------------------------------------------------
def test_owl_spreads_the_target_by_outliers_and_keeps_its_mean():
    s = owl_sparsities([0.02, 0.01, 0.05, 0.03], target=0.7, lam=0.08)
    assert round(sum(s) / 4, 12) == 0.7
    assert s.index(min(s)) == 2 and s.index(max(s)) == 1  # most outliers: least pruned
    assert round(max(s) - min(s), 12) == 0.16
    assert owl_sparsities([0.1, 0.1], 0.5, 0.08) == [0.5, 0.5]
    assert outlier_ratio([np.array([1.0] * 9 + [100.0])], m=5) == 0.1  # 100 > 5 x mean 10.9


# ---- configs ----------------------------------------------------------------------------------------
def test_one_shot_methods_take_single_weight_patterns_and_declared_parameters():
    cfg = WeightPruningConfig(pruning_type="sparse_gpt", pattern="2:4", target_sparsity=0.5)
    assert cfg.groups[0]["parameters"] == {"reg_coeff": 0.0, "block_size": 128, "dampening_frac": 0.01,
                                           "mask_selection": "block", "sparsity_allocation": "uniform",
                                           "owl_m": 5.0, "owl_lambda": 0.08}
    with pytest.raises(ConfigError, match=r"mask_selection.*'rows'"):
        WeightPruningConfig(pruning_type="sparse_gpt", pattern="1x1", parameters={"mask_selection": "rows"})
    assert WeightPruningConfig(pruning_type="wanda", pattern="1x1").groups[0]["parameters"]["owl_m"] == 5.0
    with pytest.raises(ConfigError, match=r"pruning_type='sparse_gpt' prunes single weights: pattern '1x1'.*"
                                          r"pattern '4x1' is not one of them"):
        WeightPruningConfig(pruning_type="sparse_gpt", pattern="4x1")
    with pytest.raises(ConfigError, match=r"'wanda' with pattern '2:4' prunes 2 of every 4 weights: set "
                                          r"target_sparsity=0.5"):
        WeightPruningConfig(pruning_type="wanda", pattern="2:4", target_sparsity=0.25)
    with pytest.raises(ConfigError, match=r"unknown key 'blocksize' \(did you mean 'block_size'\?\)"):
        WeightPruningConfig(pruning_type="sparse_gpt", pattern="1x1", parameters={"blocksize": 64})
    with pytest.raises(ConfigError, match=r"'sparsity_allocation'\]='owel' is not one of 'uniform', 'owl'"):
        WeightPruningConfig(pruning_type="wanda", pattern="1x1", parameters={"sparsity_allocation": "owel"})
    with pytest.raises(ConfigError, match=r"unknown key 'block_size'"):  # SparseGPT's, not Wanda's
        WeightPruningConfig(pruning_type="wanda", pattern="1x1", parameters={"block_size": 64})
    with pytest.raises(ConfigError, match=r"sparsity_allocation='owl' spreads the target unevenly.*'2:4'"):
        WeightPruningConfig(pruning_type="wanda", pattern="2:4", target_sparsity=0.5,
                            parameters={"sparsity_allocation": "owl"})


# ---- retrain_free: mask rearrangement and the least-squares weight fix -----------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_rearrangement_keeps_the_count_and_forced_units_and_never_raises_the_fisher_sum(seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(5, 9)) + rng.normal(size=(1, 9))  # correlated across batches
    fisher = (grads ** 2).sum(0)
    start = np.zeros(9, bool)
    start[np.argsort(fisher)[:4]] = True  # what selection gives: the 4 lowest diagonal scores
    forced = np.zeros(9, bool)
    forced[np.flatnonzero(start)[0]] = True
    out = rearrange(grads, start, forced)
    assert out.sum() == 4 and out[forced].all()
    assert objective(grads, out) <= objective(grads, start) + 1e-12
    best = min(objective(grads, np.isin(np.arange(9), c)) for c in combinations(range(9), 4)
               if forced[list(c)].sum() == 1)
    assert objective(grads, out) >= best - 1e-12  # a local search: never better than the exhaustive optimum


def test_rearrangement_finds_units_that_cancel():
    g = np.array([[1.0, -1.0, 0.3, 2.0], [2.0, -2.0, 0.1, 2.0]])  # units 0 and 1 cancel: pruning both costs 0
    assert rearrange(g, np.array([False, False, True, True]), None).tolist() == [True, True, False, False]
    assert objective(g, np.array([True, True, False, False])) == 0.0


def test_least_squares_scales_equal_an_explicit_least_squares_fit_of_the_units_outputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))  # correlated inputs
    w = rng.normal(size=(5, 12))
    s = Slice("down", "in", width=3)  # 4 units of 3 columns
    kept = np.array([True, False, True, True])
    scales, before, after = least_squares_scales(w, x.T @ x, s, 4, kept, dampening_frac=0.0)
    contrib = [x[:, 3 * u:3 * u + 3] @ w[:, 3 * u:3 * u + 3].T for u in range(4)]
    dense = sum(contrib)
    a = np.stack([contrib[u].ravel() for u in np.flatnonzero(kept)], axis=1)
    expect = np.linalg.lstsq(a, dense.ravel(), rcond=None)[0]
    np.testing.assert_allclose(scales, expect, rtol=1e-8)
    energy = (dense ** 2).sum()
    assert before == pytest.approx(((dense - a.sum(1).reshape(dense.shape)) ** 2).sum() / energy)
    assert after == pytest.approx(((dense.ravel() - a @ expect) ** 2).sum() / energy)
    assert after < before
    damped, _, after_damped = least_squares_scales(w, x.T @ x, s, 4, kept, dampening_frac=0.5)
    assert after <= after_damped < before and np.abs(damped - 1).max() < np.abs(scales - 1).max()
