"""The new methods: NxM blocks, channels, N:M and global structured pruning, checked by brute force."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from nc_prune import ConfigError, NcPruneError
from nc_prune.torch import prune


def _distinct(shape, seed=0):
    """A weight whose magnitudes are a permutation of 1..n (no ties), with random signs."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.tensor(shape).prod())
    values = (torch.randperm(n, generator=g) + 1).float()
    signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    return (values * signs).reshape(shape)


def _linear(out, inp, seed=0):
    m = nn.Linear(inp, out)
    with torch.no_grad():
        m.weight.copy_(_distinct((out, inp), seed))
    return m


def _block_reference(w, bh, bw, count):
    """Keep-mask pruning the ``count`` blocks of lowest mean |w| of the 2-D weight ``w``."""
    rows, cols = w.shape
    means = w.abs().reshape(rows // bh, bh, cols // bw, bw).mean(dim=(1, 3))
    order = means.reshape(-1).argsort()[:count]
    prune_blocks = torch.zeros(means.numel(), dtype=torch.bool)
    prune_blocks[order] = True
    full = prune_blocks.reshape(rows // bh, 1, cols // bw, 1).expand(-1, bh, -1, bw).reshape(rows, cols)
    return (~full).float()


@pytest.mark.parametrize("pattern, bh, bw", [("4x1", 4, 1), ("2x2", 2, 2), ("1x4", 1, 4), ("1x1", 1, 1)])
@pytest.mark.parametrize("amount", [0.25, 0.5, 5])
def test_nxm_blocks_are_the_lowest_mean_blocks(pattern, bh, bw, amount):
    m = _linear(8, 16)
    w = m.weight.detach().clone()
    n_blocks = (8 // bh) * (16 // bw)
    count = amount if isinstance(amount, int) else round(amount * n_blocks)
    prune.nxm_structured(m, "weight", amount=amount, pattern=pattern)
    assert torch.equal(m.weight_mask, _block_reference(w, bh, bw, count))
    assert int((m.weight_mask == 0).sum()) == count * bh * bw
    assert list(m.state_dict()) == ["bias", "weight_orig", "weight_mask"]


def test_channel_patterns_on_a_conv_prune_whole_filters_or_input_channels():
    conv = nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        conv.weight.copy_(_distinct((6, 4, 3, 3)))
    w = conv.weight.detach().clone()
    filters = copy.deepcopy(conv)
    prune.pattern_structured(filters, "weight", amount=2, pattern="1xchannel")
    gone = (filters.weight_mask.reshape(6, -1).sum(1) == 0).nonzero().squeeze(1)
    assert gone.tolist() == w.abs().reshape(6, -1).mean(1).argsort()[:2].sort().values.tolist()
    assert int(filters.weight_mask.sum()) == 4 * 36
    inputs = copy.deepcopy(conv)
    prune.pattern_structured(inputs, "weight", amount=0.5, pattern="channelx1")
    gone_in = (inputs.weight_mask.sum(dim=(0, 2, 3)) == 0).nonzero().squeeze(1)
    assert gone_in.tolist() == w.abs().mean(dim=(0, 2, 3)).argsort()[:2].sort().values.tolist()
    assert int(inputs.weight_mask.sum()) == 6 * 2 * 9


def test_n_m_prunes_the_n_smallest_of_every_m_consecutive_inputs():
    m = _linear(4, 16)
    w = m.weight.detach().clone()
    prune.n_m_structured(m, "weight", "2:4")
    groups_mask = m.weight_mask.reshape(-1, 4)
    groups_w = w.abs().reshape(-1, 4)
    assert groups_mask.sum(1).tolist() == [2.0] * 16
    expected = torch.ones_like(groups_w)
    expected.scatter_(1, groups_w.argsort(dim=1)[:, :2], 0.0)
    assert torch.equal(groups_mask, expected)


def test_n_m_on_a_conv_groups_input_channels_at_each_kernel_position():
    conv = nn.Conv2d(8, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(_distinct((2, 8, 2, 2)))
    prune.n_m_structured(conv, "weight", "1:4")
    view = conv.weight_mask.permute(0, 2, 3, 1).reshape(-1, 4)  # (out, kh, kw, in) groups of 4 inputs
    assert view.sum(1).tolist() == [3.0] * view.shape[0]


def test_n_m_amount_below_one_prunes_only_some_groups():
    m = _linear(2, 16)
    prune.n_m_structured(m, "weight", "2:4", amount=3)
    assert sorted(m.weight_mask.reshape(-1, 4).sum(1).tolist()) == [2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_iterative_pattern_pruning_counts_the_still_unpruned_blocks_and_keeps_old_zeros():
    m = _linear(8, 16)
    prune.nxm_structured(m, "weight", amount=0.25, pattern="4x1")  # 8 of 32 blocks
    first = m.weight_mask.clone()
    prune.nxm_structured(m, "weight", amount=0.5, pattern="4x1")  # half of the 24 left: 12 more
    assert bool(((first == 0) <= (m.weight_mask == 0)).all())
    assert int((m.weight_mask == 0).sum()) == (8 + 12) * 4
    assert [type(h).__name__ for h in m._forward_pre_hooks.values()] == ["PruningContainer"]


def test_pattern_on_top_of_unstructured_keeps_the_unstructured_zeros():
    m = _linear(8, 16)
    prune.l1_unstructured(m, "weight", amount=10)
    first = m.weight_mask.clone()
    prune.nxm_structured(m, "weight", amount=4, pattern="4x1")
    assert bool(((first == 0) <= (m.weight_mask == 0)).all())
    blocks_gone = int((m.weight_mask.reshape(2, 4, 16).sum(1) == 0).sum())
    assert blocks_gone == 4 + int((first.reshape(2, 4, 16).sum(1) == 0).sum())


def test_importance_scores_decide_instead_of_the_weight():
    m = _linear(4, 8)
    scores = torch.zeros(4, 8)
    scores[:, 4:] = 1.0
    prune.pattern_structured(m, "weight", amount=0.5, pattern="4x1", importance_scores=scores)
    assert m.weight_mask[:, :4].sum() == 0 and m.weight_mask[:, 4:].sum() == 16


def test_pattern_pruned_modules_deepcopy_and_remove():
    m = _linear(8, 16)
    prune.nxm_structured(m, "weight", amount=0.5)
    clone = copy.deepcopy(m)
    prune.remove(clone, "weight")
    assert int((clone.weight == 0).sum()) == 64 and type(clone) is nn.Linear


@pytest.mark.parametrize("call, kind", [
    (lambda m: prune.nxm_structured(m, "weight", 0.5, pattern="4x1"), NcPruneError),  # out=6 is not a multiple
    (lambda m: prune.nxm_structured(m, "weight", 0.5, pattern="2:4"), ConfigError),
    (lambda m: prune.n_m_structured(m, "weight", "4x1"), ConfigError),
    (lambda m: prune.pattern_structured(m, "weight", 0.5, pattern="3y1"), ConfigError),
    (lambda m: prune.pattern_structured(m, "weight", 99, pattern="2x1"), ValueError),
    (lambda m: prune.pattern_structured(m, "weight", 0.5, pattern="2x1", criterion_reduce_type="median"),
     ConfigError),
])
def test_pattern_errors_are_clear_and_leave_the_module_unpruned(call, kind):
    m = nn.Linear(8, 6)
    with pytest.raises(kind) as info:
        call(m)
    assert "pattern" in str(info.value) or "amount" in str(info.value) or "reduce" in str(info.value)
    assert not prune.is_pruned(m) and isinstance(m.weight, nn.Parameter)


# ---- global_structured -------------------------------------------------------------------------------
def _global_reference(weights, count):
    """Brute force: prune the ``count`` rows of lowest mean |w| over all layers."""
    scores = [(w.abs().mean(1)[r].item(), i, r) for i, w in enumerate(weights) for r in range(w.shape[0])]
    gone = sorted(scores)[:count]
    masks = [torch.ones_like(w) for w in weights]
    for _, i, r in gone:
        masks[i][r] = 0
    return masks


def test_global_channels_rank_all_layers_together():
    layers = [_linear(8, 16, 0), _linear(4, 32, 1), _linear(6, 8, 2)]
    with torch.no_grad():
        layers[1].weight.mul_(0.05)  # quiet layer: most of its rows go first
    weights = [m.weight.detach().clone() for m in layers]
    prune.global_structured([(m, "weight") for m in layers], amount=7, pattern="1xchannel",
                            max_sparsity_ratio_per_op=1.0)
    for m, ref in zip(layers, _global_reference(weights, 7)):
        assert torch.equal(m.weight_mask, ref)


def test_global_respects_per_layer_bounds():
    quiet, loud = _linear(8, 8, 0), _linear(8, 8, 1)
    with torch.no_grad():
        quiet.weight.mul_(0.001)
    prune.global_structured([(quiet, "weight"), (loud, "weight")], amount=0.5, pattern="1xchannel",
                            max_sparsity_ratio_per_op=0.5)
    rows_gone = [int((m.weight_mask.sum(1) == 0).sum()) for m in (quiet, loud)]
    assert rows_gone == [4, 4]  # unbounded, all 8 quiet rows would go
    loud_rows = loud.weight_orig.detach().abs().mean(1).argsort()[:4].sort().values
    assert (loud.weight_mask.sum(1) == 0).nonzero().squeeze(1).tolist() == loud_rows.tolist()
    a, b = _linear(8, 8, 0), _linear(8, 8, 1)
    with torch.no_grad():
        a.weight.mul_(0.001)
    prune.global_structured([(a, "weight"), (b, "weight")], amount=4, pattern="1xchannel",
                            min_sparsity_ratio_per_op=0.25)
    assert [int((m.weight_mask.sum(1) == 0).sum()) for m in (a, b)] == [2, 2]


def test_global_n_m_and_earlier_pruning():
    layers = [_linear(4, 16, 0), _linear(4, 8, 1)]
    prune.l1_unstructured(layers[0], "weight", amount=0.5)
    old = layers[0].weight_mask.clone()
    prune.global_structured([(m, "weight") for m in layers], amount=1.0, pattern="2:4",
                            max_sparsity_ratio_per_op=1.0)
    for m in layers:
        assert m.weight_mask.reshape(-1, 4).sum(1).max() <= 2
    assert bool(((old == 0) <= (layers[0].weight_mask == 0)).all())
    assert layers[1].weight_mask.reshape(-1, 4).sum(1).tolist() == [2.0] * 8


def test_global_leaves_a_misfit_dense_with_a_warning_and_fails_if_none_fit():
    fits, misfit = _linear(8, 16), nn.Linear(16, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.global_structured([(fits, "weight"), (misfit, "weight")], amount=0.5, pattern="4x1")
    assert any("(6, 16)" in str(w.message) for w in caught)
    assert int(misfit.weight_mask.sum()) == 96 and int((fits.weight_mask == 0).sum()) == 64
    with pytest.raises(NcPruneError, match="no parameter fits"):
        prune.global_structured([(nn.Linear(4, 6), "weight")], amount=0.5, pattern="4x1")
