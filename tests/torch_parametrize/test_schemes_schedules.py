"""Schemes give engine masks of the right structure; schedules give the documented numbers."""

from __future__ import annotations

import pytest
import torch

from nc_prune import ConfigError, PatternShapeError
from nc_prune.core.errors import ConfigTypeError
from nc_prune.torch.prune_impl import (BlockStructured, ChannelStructured, ConstantSparsitySchedule,
                                       MagnitudePruneImpl, NMStructured, PolynomialDecaySchedule, Unstructured,
                                       scheme_mask)


def _distinct(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.tensor(shape).prod())
    return ((torch.randperm(n, generator=g) + 1).float() * (torch.rand(n, generator=g) - 0.5).sign()).reshape(shape)


@pytest.mark.parametrize("shape", [(6, 5), (12,), (3, 2, 2, 2)])
def test_unstructured_prunes_the_smallest_magnitudes_of_any_shape(shape):
    w = _distinct(shape)
    keep = MagnitudePruneImpl.compute_mask(w, 0.5, Unstructured())
    n = w.numel()
    assert int((~keep).sum()) == n // 2
    assert torch.equal(~keep, w.abs() <= w.abs().flatten().sort().values[n // 2 - 1])


@pytest.mark.parametrize("axis, reduce_dims, kept_dim", [(0, (1, 2, 3), 0), (1, (0, 2, 3), 1), (-3, (0, 2, 3), 1)])
def test_channel_scheme_prunes_whole_channels_by_l1(axis, reduce_dims, kept_dim):
    w = _distinct((6, 4, 3, 3))
    keep = MagnitudePruneImpl.compute_mask(w, 0.5, ChannelStructured(axis=axis))
    l1 = w.abs().sum(dim=reduce_dims)
    gone = l1.argsort()[: w.shape[kept_dim] // 2]
    per_channel = keep.sum(dim=reduce_dims)
    assert sorted((per_channel == 0).nonzero().squeeze(1).tolist()) == sorted(gone.tolist())
    assert int(per_channel.max()) == w.numel() // w.shape[kept_dim]  # kept channels are whole


def test_channel_sparsity_rounds_down_to_whole_channels():
    keep = MagnitudePruneImpl.compute_mask(_distinct((7, 3)), 0.5, ChannelStructured(axis=0))
    assert int((keep.sum(1) == 0).sum()) == 3


def test_block_scheme_prunes_whole_blocks():
    w = _distinct((8, 6))
    keep = MagnitudePruneImpl.compute_mask(w, 0.5, BlockStructured((4, 1)))
    blocks = keep.reshape(2, 4, 6)
    assert bool(((blocks.sum(1) == 0) | (blocks.sum(1) == 4)).all())
    means = w.abs().reshape(2, 4, 6).mean(1)
    assert torch.equal(blocks.sum(1) == 0, means <= means.flatten().sort().values[5])


def test_n_m_scheme_prunes_the_n_smallest_of_each_group():
    w = _distinct((3, 8))
    keep = MagnitudePruneImpl.compute_mask(w, 0.5, NMStructured(n=2, m=4))
    groups = w.abs().reshape(-1, 4)
    expected = torch.ones_like(groups, dtype=torch.bool).scatter_(1, groups.argsort(1)[:, :2], False)
    assert torch.equal(keep.reshape(-1, 4), expected)
    quarter = MagnitudePruneImpl.compute_mask(w, 0.25, NMStructured(n=2, m=4))
    assert sorted(quarter.reshape(-1, 4).sum(1).tolist()) == [2, 2, 2, 4, 4, 4]


def test_scheme_validation_and_shape_errors():
    with pytest.raises(ConfigError, match="1 <= N < M"):
        NMStructured(n=4, m=4)
    with pytest.raises(ConfigTypeError):
        NMStructured(n=2.0, m=4)
    with pytest.raises(ConfigError, match="block_size"):
        BlockStructured((0, 1))
    with pytest.raises(ConfigTypeError):
        ChannelStructured(axis="out")
    with pytest.raises(ConfigError, match="axis"):
        MagnitudePruneImpl.compute_mask(_distinct((4, 4, 3, 3)), 0.5, ChannelStructured(axis=2))
    with pytest.raises(PatternShapeError, match="'head'"):
        BlockStructured((4, 1)).check("head", (6, 16))
    with pytest.raises(PatternShapeError, match="2 or more"):
        NMStructured(2, 4).check("bias", (8,))
    with pytest.raises(ConfigError, match="can reach"):
        scheme_mask(_distinct((2, 8)), 0.6, NMStructured(2, 4))
    assert NMStructured(1, 4).max_sparsity == 0.25 and Unstructured().axis is None


def test_constant_schedule():
    s = ConstantSparsitySchedule(begin_step=3)
    assert [s.compute_sparsity(i, 0.7) for i in range(5)] == [0.0, 0.0, 0.0, 0.7, 0.7]
    with pytest.raises(ConfigError):
        ConstantSparsitySchedule(begin_step=-1)


def test_polynomial_schedule_numbers():
    s = PolynomialDecaySchedule(total_iters=5, begin_step=2, power=3.0, initial_sparsity=0.1)
    got = [round(s.compute_sparsity(step, 0.9), 6) for step in range(9)]
    # t = 0, 1/4, 1/2, 3/4, 1 at steps 2..6: 0.9 - 0.8 * (1 - t) ** 3
    assert got == [0.1, 0.1, 0.1, 0.5625, 0.8, 0.8875, 0.9, 0.9, 0.9]


def test_polynomial_schedule_with_an_update_frequency_holds_between_updates():
    s = PolynomialDecaySchedule(total_iters=5, power=1.0, update_frequency=2)
    # 3 updates (steps 0, 2, 4) at t = 0, 0.5, 1; the value holds in between; prev_sparsity is not needed
    assert [s.compute_sparsity(i, 0.8, prev_sparsity=None) for i in range(7)] == [0.0, 0.0, 0.4, 0.4, 0.8,
                                                                                 0.8, 0.8]


@pytest.mark.parametrize("kwargs", [{"total_iters": 0}, {"total_iters": 3, "power": 0.0},
                                    {"total_iters": 3, "update_frequency": 0},
                                    {"total_iters": 3, "initial_sparsity": 1.5}])
def test_polynomial_schedule_validation(kwargs):
    with pytest.raises(ConfigError):
        PolynomialDecaySchedule(**kwargs)


def test_schemes_and_schedules_are_immutable_values():
    assert NMStructured(2, 4) == NMStructured(2, 4) and hash(BlockStructured((4, 1))) == hash(BlockStructured((4, 1)))
    with pytest.raises(AttributeError):
        NMStructured(2, 4).n = 1


def test_the_engine_curve_behind_the_polynomial_schedule_matches_its_cube_and_linear_decays():
    from nc_prune.core.schedulers import cube_decay, linear_decay, polynomial_decay
    for p in (0.0, 0.2, 0.5, 0.9, 1.0):
        assert polynomial_decay(p, 0.1, 0.8, 3.0) == pytest.approx(cube_decay(p, 0.1, 0.8), abs=1e-12)
        assert polynomial_decay(p, 0.1, 0.8, 1.0) == pytest.approx(linear_decay(p, 0.1, 0.8), abs=1e-12)
