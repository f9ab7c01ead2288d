"""compute_masks and the Pattern INC API: pre-masks, edge targets, bad input, array types."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from _core_reference import floor_count
from nc_prune import (ConfigError, ConfigTypeError, NoPrunableLayerError, compute_masks, get_pattern)
from nc_prune.core.arrays import to_2d


@pytest.mark.parametrize("pattern", ["4x1", "1x1", "2x2", "1xchannel", "channelx1"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_pre_masks_pruned_stays_pruned_and_masks_are_monotone(pattern, scope):
    rng = np.random.default_rng(zlib.crc32(f"{pattern}-{scope}".encode()))
    shapes = {"a": (16, 8), "b": (8, 4, 3, 3), "c": (4, 16)}
    prev = None
    for target in (0.1, 0.3, 0.5, 0.7, 0.9):
        scores = {n: rng.random(s) for n, s in shapes.items()}  # scores change between steps
        masks = compute_masks(scores, pattern, target, scope=scope, pre_masks=prev, max_sparsity_ratio_per_op=1.0)
        if prev is not None:
            for n in shapes:
                assert not (masks[n] & ~prev[n]).any(), f"{n}: a pruned weight came back at target {target}"
                assert int((~masks[n]).sum()) >= int((~prev[n]).sum())
        prev = masks
    pat = get_pattern({"pattern": pattern})
    units = {n: pat.units(n, s) for n, s in shapes.items()}
    pruned_units = {n: int(units[n].already_pruned(prev[n]).sum()) for n in shapes}
    if scope == "local":
        assert pruned_units == {n: floor_count(u.n_units, 0.9) for n, u in units.items()}
    elif len({u.unit_size for u in units.values()}) == 1:  # units of one size: the target counts units
        assert sum(pruned_units.values()) == floor_count(sum(u.n_units for u in units.values()), 0.9)
    else:  # channels of different lengths: a fraction of the weights, short of it by less than one unit
        budget = floor_count(sum(int(np.prod(s)) for s in shapes.values()), 0.9)
        pruned = sum(int((~m).sum()) for m in prev.values())
        assert 0 <= budget - pruned < max(u.unit_size for u in units.values())


def test_pre_masks_force_units_even_when_scores_are_high():
    s = np.arange(8, dtype=float).reshape(8, 1) * np.ones((1, 2))
    pre = np.ones((8, 2), dtype=bool)
    pre[7] = False  # the highest-scored row was pruned before
    keep = compute_masks({"fc": s}, "1x1", 0.5, pre_masks={"fc": pre})["fc"]
    assert int((~keep).sum()) == 8
    assert (~keep[7]).all() and (~keep[:3]).all() and keep[3:7].all()


def test_pre_masks_shape_mismatch_is_an_error():
    with pytest.raises(ConfigError, match=r"pre_masks\['fc'\] has shape \(2, 2\) but its scores have shape \(4, 4\)"):
        compute_masks({"fc": np.ones((4, 4))}, "1x1", 0.5, pre_masks={"fc": np.ones((2, 2), dtype=bool)})


@pytest.mark.parametrize("pattern", ["4x1", "2:4", "1xchannel"])
def test_target_zero_keeps_everything(pattern):
    masks = compute_masks({"a": np.random.rand(8, 8), "b": np.random.rand(4, 8, 2, 2)}, pattern, 0.0)
    assert all(m.all() and m.dtype == bool for m in masks.values())


def test_nan_scores_name_the_layer():
    s = np.random.rand(8, 8)
    s[3, 3] = np.nan
    with pytest.raises(ConfigError, match="scores of layer 'enc.fc2' contain NaN"):
        compute_masks({"enc.fc1": np.random.rand(8, 8), "enc.fc2": s}, "4x1", 0.5)
    with pytest.raises(ConfigError, match="scores of layer 'enc.fc2' contain NaN"):
        compute_masks({"enc.fc2": s}, "1x1", 0.5, scope="local")


def test_unfit_shapes_warn_with_layer_and_shape_and_stay_dense():
    scores = {"fit": np.random.rand(8, 4), "odd": np.random.rand(6, 4), "vec": np.random.rand(8)}
    with pytest.warns(UserWarning) as rec:
        masks = compute_masks(scores, "4x1", 0.5)
    texts = [str(w.message) for w in rec]
    assert any("'odd'" in t and "(6, 4)" in t and "out % 4 == 0" in t and "left dense" in t for t in texts)
    assert any("'vec'" in t and "(8,)" in t and "at least 2 dimensions" in t for t in texts)
    assert masks["odd"].all() and masks["vec"].all() and masks["vec"].shape == (8,)
    assert int((~masks["fit"]).sum()) == 16  # the target applies to the fitting layers


def test_all_unfit_is_no_prunable_layer_error():
    with pytest.raises(NoPrunableLayerError, match=r"no layer fits pattern '4x1': a: .*\(6, 4\).*b: .*\(3, 3\)"):
        with pytest.warns(UserWarning):
            compute_masks({"a": np.ones((6, 4)), "b": np.ones((3, 3))}, "4x1", 0.5)
    with pytest.raises(NoPrunableLayerError, match="scores is empty"):
        compute_masks({}, "4x1", 0.5)


@pytest.mark.parametrize("kw, exc, text", [
    (dict(target_sparsity=1.5), ConfigError, "target_sparsity=1.5"),
    (dict(scope="globl"), ConfigError, "scope='globl'"),
    (dict(criterion_reduce_type="median"), ConfigError, "criterion_reduce_type='median'"),
    (dict(max_sparsity_ratio_per_op=-1.0), ConfigError, "max_sparsity_ratio_per_op=-1.0"),
    (dict(pattern="4:2"), ConfigError, "'4:2'"),
    (dict(target_sparsity="0.5"), ConfigTypeError, "target_sparsity must be a number"),
])
def test_compute_masks_argument_errors(kw, exc, text):
    args = dict(scores={"fc": np.ones((4, 4))}, pattern="4x1", target_sparsity=0.5)
    args.update(kw)
    with pytest.raises(exc, match=text.replace("[", r"\[").replace("(", r"\(")):
        compute_masks(**args)
    with pytest.raises(ConfigTypeError, match="scores must be a dict"):
        compute_masks([np.ones((4, 4))], "4x1", 0.5)


def test_inputs_are_not_mutated():
    s = np.random.rand(8, 8)
    pre = np.ones((8, 8), dtype=bool)
    pre[0] = False
    s0, pre0 = s.copy(), pre.copy()
    compute_masks({"fc": s}, "2:4", 0.5, pre_masks={"fc": pre})
    compute_masks({"fc": s}, "4x1", 0.5, pre_masks={"fc": pre})
    assert np.array_equal(s, s0) and np.array_equal(pre, pre0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_numpy_result_type_shape_dtype(dtype):
    s = (np.random.default_rng(0).random((8, 4, 3, 3)) * 100).astype(dtype)
    keep = compute_masks({"conv": s}, "4x1", 0.5)["conv"]
    assert isinstance(keep, np.ndarray) and keep.shape == s.shape and keep.dtype == bool
    assert int((~keep).sum()) == 144


@pytest.mark.parametrize("dtype_name", ["float32", "float64", "bfloat16", "float16"])
def test_torch_tensors_in_torch_masks_out(dtype_name):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    scores = {"fc": torch.rand(16, 8, generator=g).to(dtype), "conv": torch.rand(8, 4, 3, 3, generator=g).to(dtype)}
    masks = compute_masks(scores, "2:4", 0.5)
    for n, m in masks.items():
        assert isinstance(m, torch.Tensor) and m.dtype == torch.bool and tuple(m.shape) == tuple(scores[n].shape)
        assert m.device == scores[n].device
        assert int((~m).sum()) == scores[n].numel() // 2
    ref = compute_masks({n: s.float().numpy() for n, s in scores.items()}, "2:4", 0.5)
    for n in scores:
        assert np.array_equal(masks[n].numpy(), ref[n])
    pre = {n: m.clone() for n, m in masks.items()}
    again = compute_masks(scores, "2:4", 0.5, pre_masks=pre)
    assert all(torch.equal(again[n], masks[n]) for n in scores)


# ---- the Pattern INC API ---------------------------------------------------------------------------
def test_get_masks_dispatches_on_scope_and_takes_max():
    s = {"a": np.arange(16.0).reshape(4, 4), "b": np.arange(16.0).reshape(4, 4) + 100}
    glob = get_pattern({"pattern": "1x1", "pruning_scope": "global"})
    loc = get_pattern({"pattern": "1x1", "pruning_scope": "local"})
    ones = {n: np.ones((4, 4), dtype=bool) for n in s}
    g = glob.get_masks(s, 0.5, ones, 1.0)
    assert (~g["a"]).all() and g["b"].all()
    assert all(np.array_equal(g[n], glob.get_masks_global(s, 0.5, ones, 1.0)[n]) for n in s)
    l_ = loc.get_masks(s, 0.5, ones)
    assert int((~l_["a"]).sum()) == 8 and int((~l_["b"]).sum()) == 8
    assert all(np.array_equal(l_[n], glob.get_masks_local(s, 0.5)[n]) for n in s)
    capped = glob.get_masks(s, 0.5, None, 0.75)  # the call's max overrides the config's
    assert int((~capped["a"]).sum()) == 12 and int((~capped["b"]).sum()) == 4


def test_get_mask_single_ignores_bounds():
    s = np.arange(32.0).reshape(8, 4)
    pat = get_pattern({"pattern": "4x1", "max_sparsity_ratio_per_op": 0.1})
    keep = pat.get_mask_single(s, 0.5)
    assert keep.astype(int).tolist() == [[0, 0, 0, 0]] * 4 + [[1, 1, 1, 1]] * 4
    ninm = get_pattern({"pattern": "2:4"})
    keep = ninm.get_mask_single(np.array([[4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]]), 0.25)
    assert keep.astype(int).tolist() == [[1, 1, 0, 0, 1, 1, 1, 1]]  # group score of the second ties: lower index


def test_get_sparsity_ratio_and_return_dict():
    pat = get_pattern({"pattern": "4x1"})
    m = {"a": np.array([[True, False], [False, False]]), "b": np.ones((2, 2), dtype=bool)}
    assert pat.get_sparsity_ratio(m) == 3 / 8
    assert pat.get_sparsity_ratio(m, return_dict=True) == {"sparsity_ratio": 3 / 8, "zero_cnt": 3, "total_cnt": 8}
    assert pat.get_sparsity_ratio({}) == 0.0


def test_get_pattern_lock_masks_marks_nonzero_weights():
    pat = get_pattern({"pattern": "4x1"})
    w = {"a": np.array([[0.0, 1.5], [-0.0, -2.0]])}
    assert pat.get_pattern_lock_masks(w)["a"].tolist() == [[False, True], [False, True]]


def test_get_block_size_dict_all_patterns():
    data = {"fc": np.zeros((8, 4)), "conv": np.zeros((8, 4, 3, 3))}
    assert get_pattern({"pattern": "4x1"}).get_block_size_dict(data) == {"fc": [4, 1], "conv": [4, 1]}
    assert get_pattern({"pattern": "1xchannel"}).get_block_size_dict(data) == {"fc": [1, 4], "conv": [1, 36]}
    assert get_pattern({"pattern": "channelx1"}).get_block_size_dict(data) == {"fc": [8, 1], "conv": [8, -1]}
    assert get_pattern({"pattern": "2:4"}).get_block_size_dict(data) == {"fc": [1, 4], "conv": [1, 4]}


def test_invalid_layers_are_recorded_and_warned_once():
    pat = get_pattern({"pattern": "4x1"})
    s = {"ok": np.random.rand(4, 4), "odd": np.random.rand(3, 4)}
    with pytest.warns(UserWarning, match="'odd'"):
        pat.get_masks(s, 0.5)
    assert set(pat.invalid_layers) == {"odd"} and "(3, 4)" in pat.invalid_layers["odd"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pat.get_masks(s, 0.5)  # no second warning for the same layer


def test_units_keep_canonical_view_for_expand():
    pat = get_pattern({"pattern": "2:4"})
    lu = pat.units("c", (2, 8, 1, 1))
    s = np.arange(16.0).reshape(2, 8, 1, 1)
    lu.reduce(s, "mean", None)
    prune = lu.expand(np.array([True, False, False, True]))
    assert prune.shape == (2, 8, 1, 1)
    assert to_2d(prune).astype(int).tolist() == [[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0]]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_pre_pruned_units_rank_before_minus_inf_scores(scope):
    """A unit pruned before must count towards the target even when a score of -inf ties with it."""
    s = np.array([[-np.inf, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    pre = np.ones((1, 8), dtype=bool)
    pre[0, 5] = False
    keep = compute_masks({"a": s}, "1x1", 0.125, scope=scope, pre_masks={"a": pre})["a"]
    assert keep.astype(int).tolist() == [[1, 1, 1, 1, 1, 0, 1, 1]]
    keep = compute_masks({"a": s}, "1x1", 0.25, scope=scope, pre_masks={"a": pre})["a"]
    assert keep.astype(int).tolist() == [[0, 1, 1, 1, 1, 0, 1, 1]]


@pytest.mark.filterwarnings("ignore:target sparsity")
def test_pre_masks_with_bounds_equal_reference():
    """Units pruned before rank first and raise the layer's bounds; the rest follows the usual order."""
    from _core_reference import block_means, canonical_2d, ceil_count, reference_global
    from nc_prune.core.arrays import from_2d
    rng = np.random.default_rng(21)
    for trial in range(120):
        shapes = [(4, 4), (8, 2), (4, 2, 1, 2)]
        scores = {f"l{j}": rng.integers(0, 4, size=s).astype(np.float64) for j, s in enumerate(shapes)}
        pre = {}
        for n, s in scores.items():
            gone = rng.random((s.shape[0] // 2, int(np.prod(s.shape[1:])))) < rng.random() * 0.5
            pre[n] = ~from_2d(np.repeat(gone, 2, axis=0), s.shape)
        target = float(rng.choice([0.1, 0.3, 0.5, 0.8]))
        lo_r, hi_r = float(rng.choice([0.0, 0.2])), float(rng.choice([0.6, 1.0]))
        scope = str(rng.choice(["global", "local"]))
        masks = compute_masks(scores, "2x1", target, scope=scope, pre_masks=pre, max_sparsity_ratio_per_op=hi_r,
                              min_sparsity_ratio_per_op=lo_r)
        want = []
        blocks, lo, hi = [], [], []
        for n, s in scores.items():
            b = block_means(canonical_2d(s), 2, 1).reshape(-1)
            forced = ~to_2d(pre[n]).reshape(s.shape[0] // 2, 2, -1).any(axis=1).reshape(-1)
            b[forced] = -np.inf
            blocks.append(b)
            lo.append(max(ceil_count(b.size, lo_r), int(forced.sum())))
            hi.append(max(floor_count(b.size, hi_r), int(forced.sum())))
            if scope == "local":
                c = min(max(floor_count(b.size, target), ceil_count(b.size, lo_r)), floor_count(b.size, hi_r))
                c = max(c, int(forced.sum()))
                want.append(reference_global([b], c, [c], [c])[0])
        if scope == "global":
            want = reference_global(blocks, floor_count(sum(b.size for b in blocks), target), lo, hi)
        for (n, keep), w in zip(masks.items(), want):
            got = ~to_2d(keep).reshape(scores[n].shape[0] // 2, 2, -1).any(axis=1).reshape(-1)
            assert np.array_equal(got, w), (trial, scope, n)
            assert not (keep & ~pre[n]).any()


class Wrapped:
    """A stand-in for a framework tensor type the core does not know."""

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape = self.data.shape


def test_register_array_adapter_round_trips_a_new_array_type():
    from nc_prune.core import arrays
    top = Wrapped.__module__.split(".")[0]
    arrays.register_array_adapter(top, lambda x: x.data, lambda result, ref: Wrapped(result))
    try:
        s = Wrapped(np.arange(16.0).reshape(4, 4))
        keep = compute_masks({"fc": s}, "2:4", 0.5)["fc"]
        assert isinstance(keep, Wrapped) and keep.data.dtype == bool
        assert keep.data.astype(int).tolist() == [[0, 0, 1, 1]] * 4
    finally:
        arrays._ADAPTERS.pop(top, None)
