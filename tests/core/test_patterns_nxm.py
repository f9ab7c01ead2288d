"""NxM block patterns: golden masks, exact counts, block structure, conv layout, channel patterns."""

from __future__ import annotations

import numpy as np
import pytest

from _core_reference import block_means, canonical_2d, floor_count, reference_global
from nc_prune import NoPrunableLayerError, PatternNxM, compute_masks, get_pattern
from nc_prune.core.arrays import from_2d, to_2d


def rows_filled(o, i):
    """Row r of the weight is filled with r: blocks of low rows score low."""
    return np.repeat(np.arange(o, dtype=np.float64)[:, None], i, axis=1)


def cols_filled(o, i):
    return np.repeat(np.arange(i, dtype=np.float64)[None, :], o, axis=0)


def test_docstring_example_2x1():
    w = np.array([[9., 1.], [8., 1.], [1., 7.], [1., 7.]])
    keep = compute_masks({"fc": np.abs(w)}, "2x1", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]


def test_golden_4x1_rows():
    keep = compute_masks({"fc": rows_filled(8, 3)}, "4x1", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[0, 0, 0]] * 4 + [[1, 1, 1]] * 4


def test_golden_1x2_columns():
    keep = compute_masks({"fc": cols_filled(2, 6)}, "1x2", 0.34)["fc"]  # 6 blocks, floor(2.04) = 2 pruned
    assert keep.astype(int).tolist() == [[0, 0, 1, 1, 1, 1]] * 2
    keep = compute_masks({"fc": cols_filled(2, 6)}, "1x2", 0.5)["fc"]  # 3 blocks pruned: ties by position
    assert keep.astype(int).tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]]


def test_golden_2x2_global_two_layers():
    a = np.array([[1, 1, 9, 9], [1, 1, 9, 9]], dtype=float)   # blocks: 1, 9
    b = np.array([[5, 5, 0, 0], [5, 5, 0, 0]], dtype=float)   # blocks: 5, 0
    masks = compute_masks({"a": a, "b": b}, "2x2", 0.5)
    assert masks["a"].astype(int).tolist() == [[0, 0, 1, 1]] * 2
    assert masks["b"].astype(int).tolist() == [[1, 1, 0, 0]] * 2
    local = compute_masks({"a": a, "b": b}, "2x2", 0.5, scope="local")
    assert local["a"].astype(int).tolist() == [[0, 0, 1, 1]] * 2
    assert local["b"].astype(int).tolist() == [[1, 1, 0, 0]] * 2


@pytest.mark.parametrize("reduce_type, expected", [
    ("mean", [[0, 0], [1, 1]]),   # block means 2.5 (top) vs 3.0 (bottom)
    ("sum", [[0, 0], [1, 1]]),
    ("max", [[1, 1], [0, 0]]),   # block max 5 (top) vs 3 (bottom)
])
def test_reduce_types(reduce_type, expected):
    s = np.array([[0.0, 5.0], [3.0, 3.0]])
    keep = compute_masks({"fc": s}, "1x2", 0.5, criterion_reduce_type=reduce_type)["fc"]
    assert keep.astype(int).tolist() == expected


SHAPES = [(8, 4), (16, 12), (32, 32), (4, 64), (12, 6, 3, 3), (8, 2, 1, 5), (16, 3, 2)]


@pytest.mark.parametrize("pattern, bh, bw", [("1x1", 1, 1), ("4x1", 4, 1), ("2x2", 2, 2), ("1x2", 1, 2),
                                             ("4x2", 4, 2)])
@pytest.mark.parametrize("target", [0.0, 0.1, 0.33, 0.5, 0.57, 0.9, 0.98])
def test_exact_counts_and_blocks_local(pattern, bh, bw, target):
    rng = np.random.default_rng(int(target * 100) + bh * 10 + bw)
    for shape in SHAPES:
        cols = int(np.prod(shape[1:]))
        if shape[0] % bh or cols % bw:
            continue
        units = (shape[0] // bh) * (cols // bw)
        s = rng.random(shape)
        keep = compute_masks({"w": s}, pattern, target, scope="local", max_sparsity_ratio_per_op=1.0)["w"]
        assert keep.shape == shape and keep.dtype == bool
        assert int((~keep).sum()) == floor_count(units, target) * bh * bw
        grid = to_2d(keep).reshape(shape[0] // bh, bh, cols // bw, bw)
        assert (grid.all(axis=(1, 3)) | ~grid.any(axis=(1, 3))).all()  # every block all kept or all pruned
        # the pruned blocks are the lowest-scored ones
        means = block_means(canonical_2d(s), bh, bw).reshape(-1)
        pruned = ~grid.any(axis=(1, 3)).reshape(-1)
        if pruned.any() and not pruned.all():
            assert means[pruned].max() < means[~pruned].min()


@pytest.mark.filterwarnings("ignore:target sparsity")
@pytest.mark.parametrize("pattern, bh, bw", [("4x1", 4, 1), ("2x2", 2, 2), ("1x1", 1, 1)])
def test_global_blocks_equal_reference_with_ties(pattern, bh, bw):
    rng = np.random.default_rng(bh * 7 + bw)
    for trial in range(20):
        shapes = [(8, 4), (4, 6), (8, 2, 1, 2), (4, 2, 2, 1)]
        scores = {f"l{j}": rng.integers(0, 4, size=s).astype(np.float32) for j, s in enumerate(shapes)}
        target = float(rng.choice([0.2, 0.5, 0.75]))
        lo_r, hi_r = float(rng.choice([0.0, 0.25])), float(rng.choice([0.5, 1.0]))
        block_scores = [block_means(canonical_2d(s), bh, bw).reshape(-1) for s in scores.values()]
        sizes = [b.size for b in block_scores]
        lo = [int(np.ceil(round(n * lo_r, 6))) for n in sizes]
        hi = [floor_count(n, hi_r) for n in sizes]
        k = floor_count(sum(sizes), target)
        want = reference_global(block_scores, k, lo, hi)
        masks = compute_masks(scores, pattern, target, max_sparsity_ratio_per_op=hi_r, min_sparsity_ratio_per_op=lo_r)
        for (name, keep), w, s in zip(masks.items(), want, scores.values()):
            grid = ~to_2d(keep).reshape(s.shape[0] // bh, bh, -1, bw).any(axis=(1, 3))
            assert np.array_equal(grid.reshape(-1), w), (trial, name)


def test_conv_view_is_out_by_kernel_then_input_fastest():
    o, i, kh, kw = 3, 4, 2, 3
    a = np.arange(o * i * kh * kw).reshape(o, i, kh, kw)
    v = to_2d(a)
    assert v.shape == (o, kh * kw * i)
    for oo in range(o):
        for y in range(kh):
            for x in range(kw):
                for ii in range(i):
                    assert v[oo, (y * kw + x) * i + ii] == a[oo, ii, y, x]
    assert np.array_equal(v, canonical_2d(a))
    assert np.array_equal(from_2d(v, a.shape), a)
    a3 = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    assert np.array_equal(to_2d(a3), canonical_2d(a3)) and np.array_equal(from_2d(to_2d(a3), a3.shape), a3)


def test_conv_1x4_blocks_are_input_channels_at_one_kernel_position():
    o, i, kh, kw = 4, 4, 3, 3
    # score of (filter, position) = filter * 9 + position, the same for every input channel
    pos = np.arange(kh * kw).reshape(kh, kw)
    s = np.broadcast_to((np.arange(o)[:, None, None] * 9 + pos[None])[:, None], (o, i, kh, kw)).astype(float)
    keep = compute_masks({"conv": s}, f"1x{i}", 0.5)["conv"]
    assert int((~keep).sum()) == 18 * i
    for oo in range(o):
        for y in range(kh):
            for x in range(kw):
                column = keep[oo, :, y, x]
                assert column.all() or not column.any()
                assert column.all() == (oo * 9 + y * kw + x >= 18)


def test_1xchannel_prunes_whole_filters_on_conv():
    o, i = 8, 3
    s = np.random.default_rng(0).random((o, i, 3, 3)) + np.arange(o)[:, None, None, None] * 10
    keep = compute_masks({"conv": s}, "1xchannel", 0.5)["conv"]
    assert (~keep[:4]).all() and keep[4:].all()
    pat = get_pattern({"pattern": "1xchannel"})
    assert pat.get_block_size_dict({"conv": s}) == {"conv": [1, i * 9]}


def test_channelx1_prunes_input_channels_everywhere_on_conv():
    o, i = 4, 6
    s = np.random.default_rng(1).random((o, i, 3, 3)) + np.array([5, 0, 4, 1, 3, 2])[None, :, None, None] * 10
    keep = compute_masks({"conv": s}, "channelx1", 0.5)["conv"]
    assert int((~keep).sum()) == 3 * o * 9
    for c in range(i):
        assert keep[:, c].all() == (c in (0, 2, 4))
        assert keep[:, c].all() or not keep[:, c].any()


def test_channel_patterns_on_linear():
    s = rows_filled(6, 4)
    keep = compute_masks({"fc": s}, "1xchannel", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[0] * 4] * 3 + [[1] * 4] * 3
    keep = compute_masks({"fc": cols_filled(3, 6)}, "channelx1", 0.34)["fc"]
    assert keep.astype(int).tolist() == [[0, 0, 1, 1, 1, 1]] * 3


def test_channel_patterns_mixed_layers_global_count_weights_or_units_as_asked():
    """Rows of different lengths: the target is a fraction of the weights (each unit counts its size),
    or, with global_target="units", INC's fraction of the units."""
    a = rows_filled(4, 8) + 100  # 4 rows of 8 weights, high
    b = rows_filled(8, 2)  # 8 rows of 2 weights, low
    masks = compute_masks({"a": a, "b": b}, "1xchannel", 0.5)
    # 24 of 48 weights: b's 7 rows (its 0.98 bound) = 14, a's lowest row = 8; a's next row (8) exceeds the 2 left
    assert int((~masks["b"]).all(axis=1).sum()) == 7 and int((~masks["a"]).all(axis=1).sum()) == 1
    assert (~masks["a"][0]).all() and masks["a"][1:].all()
    assert sum(int((~m).sum()) for m in masks.values()) == 22
    masks = compute_masks({"a": a, "b": b}, "1xchannel", 0.5, global_target="units")
    assert masks["a"].all()
    assert int((~masks["b"]).all(axis=1).sum()) == 6  # floor(12 rows * 0.5) = 6 rows, all in b


def test_weighted_global_selection_matches_the_reference_with_bounds_and_ties():
    from _core_reference import reference_global_weighted
    from nc_prune.core.selection import Cutter, global_cuts
    rng = np.random.default_rng(7)
    for trial in range(30):
        n = rng.integers(1, 5)
        sizes = [int(rng.integers(1, 40)) for _ in range(n)]
        scores = [rng.integers(0, 6, size=s).astype(np.float32) for s in sizes]  # many ties
        weights = [int(rng.integers(1, 9)) for _ in range(n)]
        lo = [int(rng.integers(0, s // 3 + 1)) for s in sizes]
        hi = [int(rng.integers(l, s + 1)) for l, s in zip(lo, sizes)]
        k = int(rng.integers(0, sum(s * w for s, w in zip(sizes, weights)) + 1))
        cuts, _ = global_cuts(scores, sizes, k, lo, hi, weights=weights)
        got = [Cutter(c)(s) for s, c in zip(scores, cuts)]
        want = reference_global_weighted(scores, weights, k, lo, hi)
        for g, w_ in zip(got, want):
            assert np.array_equal(g, w_), trial


def test_block_size_attribute_and_unit_split():
    pat = get_pattern({"pattern": "4x1"})
    assert isinstance(pat, PatternNxM) and pat.block_size == [4, 1]
    assert pat.get_block_size_dict({"a": np.zeros((8, 4)), "c": np.zeros((8, 2, 3, 3))}) == {"a": [4, 1], "c": [4, 1]}
    lu = pat.units("c", (8, 2, 3, 3))
    assert lu.n_units == 2 * 18 and lu.unit_size == 4


# ---- blocks of several whole channels (INC's "Nxchannel" / "channelxM") -------------------------
def test_golden_2xchannel_prunes_pairs_of_whole_output_rows():
    keep = compute_masks({"fc": rows_filled(8, 3)}, "2xchannel", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[0, 0, 0]] * 4 + [[1, 1, 1]] * 4
    assert get_pattern({"pattern": "2xchannel"}).get_block_size_dict({"fc": np.zeros((8, 3))}) == {"fc": [2, 3]}
    # conv: 2 whole filters per unit, so a 6-filter conv has 3 units and 1/3 prunes exactly one pair
    w = np.arange(6.0)[:, None, None, None] * np.ones((6, 2, 3, 3))
    keep = compute_masks({"conv": w}, "2xchannel", 1 / 3)["conv"]
    assert keep[:2].sum() == 0 and keep[2:].all()


def test_golden_channelx2_prunes_pairs_of_whole_input_channels_at_every_kernel_position():
    keep = compute_masks({"fc": cols_filled(3, 8)}, "channelx2", 0.5)["fc"]
    assert keep.astype(int).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] * 3
    w = np.arange(4.0)[None, :, None, None] * np.ones((5, 4, 3, 3))  # input channel c holds c
    keep = compute_masks({"conv": w}, "channelx2", 0.5)["conv"]
    assert not keep[:, :2].any() and keep[:, 2:].all()
    assert get_pattern({"pattern": "channelx2"}).get_block_size_dict({"fc": np.zeros((3, 8))}) == {"fc": [3, 2]}


def test_multi_channel_patterns_that_do_not_divide_the_layer_leave_it_dense_with_the_reason():
    with pytest.warns(UserWarning, match=r"'odd'.*5 input channels.*groups of 2.*left dense"):
        masks = compute_masks({"odd": np.ones((4, 5)), "ok": cols_filled(4, 4)}, "channelx2", 0.5)
    assert masks["odd"].all() and int((~masks["ok"]).sum()) == 8
    with pytest.warns(UserWarning, match=r"'odd'.*out % 2 == 0"):
        compute_masks({"odd": np.ones((5, 4)), "ok": rows_filled(4, 4)}, "2xchannel", 0.5)


# ---- layers without weights --------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["4x1", "1x1", "1xchannel", "channelx1", "2:4"])
def test_a_zero_size_layer_is_left_dense_with_a_warning_naming_it(pattern):
    with pytest.warns(UserWarning, match=r"layer 'empty' has weight shape \(0, 8\) with no weights"):
        masks = compute_masks({"empty": np.ones((0, 8)), "fc": rows_filled(8, 8)}, pattern, 0.5)
    assert masks["empty"].shape == (0, 8) and int((~masks["fc"]).sum()) == 32
    with pytest.raises(NoPrunableLayerError, match=r"no layer fits pattern.*'empty'.*no weights"), pytest.warns(UserWarning):
        compute_masks({"empty": np.ones((4, 0))}, pattern, 0.5)


def test_inc_channel_patterns_by_name_are_kernel_position_blocks_on_conv_and_channels_on_linear():
    w = np.random.default_rng(0).random((2, 3, 2, 2))  # 2 filters, 3 inputs, 2x2 kernel: 12 columns
    keep = to_2d(compute_masks({"conv": w}, "inc_channelx1", 0.5)["conv"])
    assert sorted(keep.sum(axis=0).tolist()) == [0] * 6 + [2] * 6  # 6 of 12 columns, each whole
    keep = to_2d(compute_masks({"conv": w}, "inc_1xchannel", 0.5)["conv"]).reshape(2, 4, 3)
    assert sorted(keep.sum(axis=2).reshape(-1).tolist()) == [0] * 4 + [3] * 4  # 3 inputs at one position
    lin = np.random.default_rng(1).random((4, 6))
    for inc, ours in (("inc_channelx1", "channelx1"), ("inc_1xchannel", "1xchannel")):
        assert np.array_equal(compute_masks({"fc": lin}, inc, 0.5)["fc"], compute_masks({"fc": lin}, ours, 0.5)["fc"])
