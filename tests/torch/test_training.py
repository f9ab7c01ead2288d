"""Training-time pruning of torch models: exact sparsity, structure, schedule, masks held at zero."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig, sparsity_at
from nc_prune.core.selection import count_for_ratio
from nc_prune.torch import prepare_pruning

from .conftest import SmallCNN, mlp, train_steps, zeros


def pruned_weights(pruning):
    return {name: t.weight.detach() for p in pruning.pruners for name, t in p.modules.items()}


@pytest.mark.parametrize("ptype", ["magnitude", "gradient", "snip", "snip_momentum"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_4x1_exact_block_count(seeded, ptype, scope):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = WeightPruningConfig(pruning_type=ptype, pattern="4x1", target_sparsity=0.7, pruning_scope=scope,
                              start_step=1, end_step=5, pruning_frequency=2)
    pruning = prepare_pruning(model, cfg, opt)
    train_steps(model, opt, 8)
    weights = pruned_weights(pruning)
    assert set(weights) == {"0", "2"}  # the head "4" is excluded by default
    blocks = {n: (w.reshape(w.shape[0] // 4, 4, w.shape[1]) == 0) for n, w in weights.items()}
    for n, b in blocks.items():  # whole 4x1 blocks only
        assert torch.equal(b.all(1), b.any(1)), n
    pruned = {n: int(b.all(1).sum()) for n, b in blocks.items()}
    units = {n: w.numel() // 4 for n, w in weights.items()}
    if scope == "global":
        assert sum(pruned.values()) == count_for_ratio(sum(units.values()), 0.7)
    else:
        assert pruned == {n: count_for_ratio(u, 0.7) for n, u in units.items()}
    assert torch.count_nonzero(model[4].weight) == model[4].weight.numel()


def test_conv_4x1_blocks_follow_the_canonical_view(seeded):
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5,
                              pruning_scope="local")
    prepare_pruning(model, cfg, opt)
    train_steps(model, opt, 1, in_shape=(4, 1, 8, 8))
    w = model.conv2.weight.detach()  # (16, 8, 3, 3)
    view = w.permute(0, 2, 3, 1).reshape(16, -1)  # (O, kh*kw*I)
    blocks = view.reshape(4, 4, -1) == 0
    assert torch.equal(blocks.all(1), blocks.any(1))
    assert int(blocks.all(1).sum()) == count_for_ratio(4 * 72, 0.5)


def test_channel_patterns_on_conv(seeded):
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig([
        {"op_names": ["conv2"], "pattern": "channelx1", "target_sparsity": 0.5},
        {"op_names": ["fc1"], "pattern": "1xchannel", "target_sparsity": 0.25},
    ], pruning_type="magnitude", pruning_scope="local")
    prepare_pruning(model, cfg, opt)
    train_steps(model, opt, 1, in_shape=(4, 1, 8, 8))
    w = model.conv2.weight.detach()
    per_input = (w == 0).sum(dim=(0, 2, 3))  # whole input channels: 16 filters x 9 positions
    assert sorted(per_input.tolist()) == [0] * 4 + [144] * 4
    rows = (model.fc1.weight == 0).sum(1)
    assert sorted(rows.tolist()) == [0] * 24 + [64] * 8


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("1:4", 1, 4), ("4:8", 4, 8)])
def test_n_m_structure_and_no_overshoot(seeded, pattern, n, m):
    """INC drifted above the target with N:M during training; groups here stay the same groups."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    target = n / m
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern=pattern, target_sparsity=target,
                              start_step=0, end_step=6, pruning_frequency=2, max_sparsity_ratio_per_op=1.0)
    pruning = prepare_pruning(model, cfg, opt)
    train_steps(model, opt, 12)
    for name, w in pruned_weights(pruning).items():
        groups = (w.reshape(-1, m) == 0).sum(1)
        assert set(groups.tolist()) == {n}, name
    total = sum(w.numel() for w in pruned_weights(pruning).values())
    assert sum(zeros(w) for w in pruned_weights(pruning).values()) == total * n // m


def test_sparsity_follows_schedule_at_every_step(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start, end, freq, target = 2, 11, 3, 0.8
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="1x1", target_sparsity=target, start_step=start,
                              end_step=end, pruning_frequency=freq, sparsity_decay_type="cube")
    pruning = prepare_pruning(model, cfg, opt)
    total = sum(w.numel() for w in pruned_weights(pruning).values())
    for step in range(14):
        train_steps(model, opt, 1, seed=step)
        expected = count_for_ratio(total, sparsity_at(step, start, end, freq, target, "cube"))
        assert sum(zeros(w) for w in pruned_weights(pruning).values()) == expected, step
    assert pruning.global_step == 14


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5),
    lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
])
def test_masked_weights_stay_exactly_zero(seeded, make_opt):
    model = mlp()
    opt = make_opt(model.parameters())
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.6)
    pruning = prepare_pruning(model, cfg, opt)
    train_steps(model, opt, 1)
    masks = {n: m.clone() for n, m in pruning.masks.items()}
    for step in range(20):
        train_steps(model, opt, 1, seed=step + 1)
        for name, w in pruned_weights(pruning).items():
            assert torch.all(w[~masks[name]] == 0), (name, step)
            assert torch.equal(pruning.masks[name], masks[name])


def test_pattern_lock_keeps_existing_zeros(seeded):
    model = mlp()
    with torch.no_grad():
        model[0].weight[:, ::2] = 0
        model[2].weight[:8] = 0
    before = {n: (getattr(model, n).weight == 0).clone() for n in ("0", "2")}
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(pruning_type="pattern_lock"), opt)
    train_steps(model, opt, 10)
    for n, z in before.items():
        assert torch.equal(getattr(model, n).weight == 0, z)


def test_progressive_prunes_whole_blocks_in_stages(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig(pruning_type="magnitude_progressive", pattern="4x1", target_sparsity=0.8,
                              start_step=0, end_step=8, pruning_frequency=4, progressive_steps=4,
                              sparsity_decay_type="linear")
    pruning = prepare_pruning(model, cfg, opt)
    total = sum(w.numel() for w in pruned_weights(pruning).values())
    per_layer = []
    for step in range(10):
        train_steps(model, opt, 1, seed=step)
        ws = pruned_weights(pruning)
        for w in ws.values():
            b = w.reshape(w.shape[0] // 4, 4, -1) == 0
            assert torch.equal(b.all(1), b.any(1))
        per_layer.append({n: zeros(w) // 4 for n, w in ws.items()})
    # 384 blocks; pruning steps 0, 4 and 8 with linear targets 0.8/3, 1.6/3, 0.8 → 102, 204, 307 blocks.
    assert total // 4 == 384
    assert [sum(per_layer[s].values()) for s in (3, 7, 8, 9)] == [102, 204, 307, 307]
    # Steps 0 and 4 stage each layer's new blocks over 4 steps: floor(new * (j+1) / 4) at stage j.
    for first, done_before in ((0, None), (4, 3)):
        for j in range(4):
            for n, done in per_layer[first + 3].items():
                before = 0 if done_before is None else per_layer[done_before][n]
                assert per_layer[first + j][n] == before + (done - before) * (j + 1) // 4, (first, j, n)


def test_group_lasso_adds_block_norm_gradient(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: inspect the gradient only
    coeff = 0.5
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, start_step=5,
                              end_step=10, reg_type="group_lasso", parameters={"reg_coeff": coeff})
    prepare_pruning(model, cfg, opt)
    x = torch.randn(8, 16)
    opt.zero_grad()
    model(x).sum().backward()
    plain = model[0].weight.grad.clone()
    opt.step()  # step 0: outside [start, end], no term
    assert torch.equal(model[0].weight.grad, plain)
    for _ in range(5):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    w = model[0].weight.detach()
    norms = w.reshape(8, 4, 16).norm(dim=1, keepdim=True).expand(8, 4, 16).reshape(32, 16)
    opt.zero_grad()
    model(x).sum().backward()
    g0 = model[0].weight.grad.clone()
    opt.step()
    assert torch.allclose(model[0].weight.grad - g0, coeff * w / (norms + 1e-8), atol=1e-6)
