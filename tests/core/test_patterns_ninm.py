"""N:M patterns: N of every M consecutive input weights pruned; partial targets prune the lowest groups."""

from __future__ import annotations

import numpy as np
import pytest

from _core_reference import canonical_2d, floor_count, reference_global, reference_local
from nc_prune import ConfigError, PatternNInM, WeightPruningConfig, compute_masks, get_pattern
from nc_prune.core.arrays import to_2d


def group_scores(s, n, m):
    """Mean of the N lowest of each group of M consecutive columns of the canonical view (test's own)."""
    v = canonical_2d(s)
    out = []
    for r in range(v.shape[0]):
        for g in range(v.shape[1] // m):
            vals = sorted(float(x) for x in v[r, g * m:(g + 1) * m])
            out.append(sum(vals[:n]) / n)
    return np.array(out)


def test_docstring_worked_example():
    s = np.array([[0.9, 0.1, 0.4, 0.2, 0.3, 0.8, 0.7, 0.6]])
    keep = compute_masks({"fc": s}, "2:4", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[1, 0, 1, 0, 0, 1, 1, 0]]
    keep = compute_masks({"fc": s}, "2:4", 0.25)["fc"]
    assert keep.astype(int).tolist() == [[1, 0, 1, 0, 1, 1, 1, 1]]


def test_n_counts_pruned_weights():
    s = np.array([[4.0, 3.0, 2.0, 1.0]])
    assert compute_masks({"fc": s}, "1:4", 0.25)["fc"].astype(int).tolist() == [[1, 1, 1, 0]]
    assert compute_masks({"fc": s}, "3:4", 0.75)["fc"].astype(int).tolist() == [[1, 0, 0, 0]]
    pat = get_pattern({"pattern": "2:8"})
    assert isinstance(pat, PatternNInM) and (pat.N, pat.M) == (2, 8)


SHAPES = [(4, 8), (8, 16), (3, 24), (16, 8, 3, 3), (6, 4, 1, 2), (5, 8, 3)]


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "2:8", "1:2", "3:6"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_every_group_has_zero_or_n_pruned(pattern, scope):
    n, m = map(int, pattern.split(":"))
    rng = np.random.default_rng(n * 31 + m)
    scores = {f"l{j}": rng.random(s) for j, s in enumerate(SHAPES) if int(np.prod(s[1:])) % m == 0}
    for target in (n / m, n / m / 2, n / m * 0.3, 0.0):
        masks = compute_masks(scores, pattern, target, scope=scope, max_sparsity_ratio_per_op=1.0)
        total_groups = pruned_groups = 0
        for name, keep in masks.items():
            g = (~to_2d(keep)).reshape(-1, m).sum(axis=1)
            assert set(np.unique(g)) <= {0, n}, name
            # the pruned ones are the N lowest of their group
            v = to_2d(scores[name]).reshape(-1, m)
            for row, cnt, vals in zip((~to_2d(keep)).reshape(-1, m), g, v):
                if cnt:
                    assert vals[row].max() < vals[~row].min()
            total_groups += g.size
            pruned_groups += int((g == n).sum())
            if scope == "local":
                assert int((g == n).sum()) == floor_count(g.size, target * m / n), name
        if scope == "global":
            assert pruned_groups == floor_count(total_groups, target * m / n)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_partial_target_prunes_lowest_groups_reference(scope):
    rng = np.random.default_rng(0 if scope == "local" else 1)
    for _ in range(15):
        scores = {"a": rng.random((4, 8)), "b": rng.random((2, 4, 2, 2)), "c": rng.random((6, 12))}
        target = float(rng.choice([0.1, 0.2, 0.3, 0.4]))
        masks = compute_masks(scores, "2:4", target, scope=scope, max_sparsity_ratio_per_op=1.0)
        gs = [group_scores(s, 2, 4) for s in scores.values()]
        if scope == "local":
            want = [reference_local(g, floor_count(g.size, target * 2)) for g in gs]
        else:
            total = sum(g.size for g in gs)
            want = reference_global(gs, floor_count(total, target * 2), [0] * 3, [g.size for g in gs])
        for (name, keep), w in zip(masks.items(), want):
            got = (~to_2d(keep)).reshape(-1, 4).any(axis=1)
            assert np.array_equal(got, w), name


def test_conv_groups_are_consecutive_input_channels_at_one_position():
    o, i, kh, kw = 2, 8, 2, 2
    s = np.random.default_rng(4).random((o, i, kh, kw))
    keep = compute_masks({"conv": s}, "2:4", 0.5)["conv"]
    for oo in range(o):
        for y in range(kh):
            for x in range(kw):
                for g in range(i // 4):
                    chan = keep[oo, g * 4:(g + 1) * 4, y, x]
                    vals = s[oo, g * 4:(g + 1) * 4, y, x]
                    assert int((~chan).sum()) == 2
                    assert set(np.flatnonzero(~chan)) == set(np.argsort(vals)[:2])


def test_ties_inside_a_group_go_to_lower_index():
    keep = compute_masks({"fc": np.ones((1, 4))}, "2:4", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_pre_masks_pruned_stays_pruned_and_monotone(scope):
    rng = np.random.default_rng(9)
    scores = {"a": rng.random((8, 16)), "b": rng.random((4, 8, 3, 3))}
    prev = None
    for target in (0.1, 0.2, 0.35, 0.5):
        fresh = {n: rng.random(s.shape) for n, s in scores.items()}  # new scores every step
        masks = compute_masks(fresh, "2:4", target, scope=scope, pre_masks=prev, max_sparsity_ratio_per_op=1.0)
        for name, keep in masks.items():
            g = (~to_2d(keep)).reshape(-1, 4).sum(axis=1)
            assert set(np.unique(g)) <= {0, 2}
            if prev is not None:
                assert not (keep & ~prev[name]).any(), "a pruned weight came back"
        total = sum(int((~m).sum()) for m in masks.values())
        size = sum(s.size for s in scores.values())
        if scope == "global":
            assert total == floor_count(size // 4, target * 2) * 2
        prev = masks
    assert sum(int((~m).sum()) for m in prev.values()) == sum(s.size for s in scores.values()) // 2


def test_target_above_n_over_m_is_a_config_error():
    with pytest.raises(ConfigError, match=r"target_sparsity=0.6 is above what pattern '2:4' can reach"):
        WeightPruningConfig(pattern="2:4", target_sparsity=0.6)


def test_unfit_columns_warn_and_stay_dense():
    with pytest.warns(UserWarning, match=r"layer 'odd' with weight shape \(4, 6\).*columns % 4 == 0.*left dense"):
        masks = compute_masks({"odd": np.random.rand(4, 6), "ok": np.random.rand(4, 8)}, "2:4", 0.5)
    assert masks["odd"].all() and int((~masks["ok"]).sum()) == 16


def test_block_size_dict():
    pat = get_pattern({"pattern": "2:4"})
    assert pat.get_block_size_dict({"a": np.zeros((4, 8)), "c": np.zeros((4, 8, 3, 3))}) == {"a": [1, 4], "c": [1, 4]}


def test_pre_pruned_weight_stays_the_pruned_one_of_its_group_despite_minus_inf():
    s = np.array([[-np.inf, 1.0, 2.0, 3.0]])
    pre = np.array([[True, True, False, True]])
    keep = compute_masks({"fc": s}, "1:4", 0.25, pre_masks={"fc": pre})["fc"]
    assert keep.astype(int).tolist() == [[1, 1, 0, 1]]
