"""Sparsity schedules: exact values at every pruning step, one-shot, step rules, custom decays."""

from __future__ import annotations

import math

import pytest

from nc_prune import SPARSITY_DECAYS, WeightPruningConfig, get_scheduler, register_sparsity_decay, sparsity_at
from nc_prune.core.schedulers import (IterativeScheduler, OneshotScheduler, is_pruning_step, pruning_steps_count)

# start=0, end=3, frequency=1 → 4 pruning steps at progress 1/4, 2/4, 3/4, 1; target 0.8 (hand-computed)
EXPECTED_4_STEPS = {
    "linear": [0.2, 0.4, 0.6, 0.8],
    "cube": [0.4625, 0.7, 0.7875, 0.8],                 # 0.8 * (1 - (1 - p)^3)
    "cos": [0.0608964, 0.2343146, 0.4938533, 0.8],      # 0.8 * (1 - cos(p * pi / 2))
    "exp": [0.3312597, 0.5527864, 0.7009302, 0.8],      # 1 - 0.2^p
}


@pytest.mark.parametrize("decay", sorted(EXPECTED_4_STEPS))
def test_values_at_each_pruning_step(decay):
    got = [sparsity_at(s, 0, 3, 1, 0.8, decay) for s in range(4)]
    assert got == pytest.approx(EXPECTED_4_STEPS[decay], abs=5e-8)
    assert got[-1] == 0.8  # the last pruning step reaches the target exactly
    assert sparsity_at(10, 0, 3, 1, 0.8, decay) == 0.8
    assert all(a < b for a, b in zip(got, got[1:]))


@pytest.mark.parametrize("decay", sorted(EXPECTED_4_STEPS))
def test_frequency_not_dividing_the_span(decay):
    # start 2, end 9, frequency 3: pruning at 2, 5, 8 (3 steps); 9 is inside the window but not a pruning step
    assert pruning_steps_count(2, 9, 3) == 3
    assert [s for s in range(15) if is_pruning_step(s, 2, 9, 3)] == [2, 5, 8]
    f = {"linear": lambda p: 0.6 * p, "cube": lambda p: 0.6 * (1 - (1 - p) ** 3),
         "cos": lambda p: 0.6 * (1 - math.cos(p * math.pi / 2)), "exp": lambda p: 1 - 0.4 ** p}[decay]
    want = [0.0, 0.0, f(1 / 3), f(1 / 3), f(1 / 3), f(2 / 3), f(2 / 3), f(2 / 3), 0.6, 0.6, 0.6]
    got = [sparsity_at(s, 2, 9, 3, 0.6, decay) for s in range(11)]
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    sched = get_scheduler(dict(WeightPruningConfig(start_step=2, end_step=9, pruning_frequency=3,
                                                   target_sparsity=0.6, sparsity_decay_type=decay).groups[0]))
    assert isinstance(sched, IterativeScheduler)
    assert sched.last_pruning_step() == 8
    assert [sched.is_pruning_step(s) for s in range(11)] == [s in (2, 5, 8) for s in range(11)]
    assert [sched.update_sparsity_ratio(s) for s in range(11)] == pytest.approx(want, rel=1e-12, abs=0)


def test_linear_docstring_example():
    assert [round(sparsity_at(s, 0, 4, 1, 0.8, "linear"), 3) for s in range(6)] == [0.16, 0.32, 0.48, 0.64, 0.8, 0.8]


def test_init_sparsity_is_the_starting_point():
    assert sparsity_at(0, 0, 1, 1, 0.8, "linear", init=0.4) == pytest.approx(0.6)
    assert sparsity_at(-1, 0, 1, 1, 0.8, "linear", init=0.4) == 0.4
    assert sparsity_at(0, 0, 1, 1, 0.8, "exp", init=0.5) == pytest.approx(1 - 0.5 * 0.4 ** 0.5)


def test_one_shot():
    cfg = WeightPruningConfig(start_step=5, end_step=5, target_sparsity=0.7).groups[0]
    sched = get_scheduler(cfg)
    assert isinstance(sched, OneshotScheduler)
    assert [sched.is_pruning_step(s) for s in range(8)] == [False] * 5 + [True, False, False]
    assert [sched.update_sparsity_ratio(s) for s in (0, 4, 5, 6, 100)] == [0.0, 0.0, 0.7, 0.7, 0.7]
    assert sched.last_pruning_step() == 5
    assert sparsity_at(5, 5, 5, 1, 0.7) == 0.7


def test_every_step_of_a_long_window_with_frequency():
    start, end, freq, target = 10, 110, 10, 0.9
    n = 11
    for step in range(0, 130):
        want = 0.0 if step < start else (target if step >= 110 else 1 - 0.1 ** ((min((step - start) // freq + 1, n)) / n))
        assert sparsity_at(step, start, end, freq, target, "exp") == pytest.approx(want, rel=1e-12, abs=0)


def test_custom_decay_drives_the_scheduler():
    @register_sparsity_decay("square")
    def square(progress, init, target):
        return init + (target - init) * progress ** 2

    try:
        cfg = WeightPruningConfig(start_step=0, end_step=3, target_sparsity=0.8, sparsity_decay_type="square")
        sched = get_scheduler(cfg.groups[0])
        assert [sched.update_sparsity_ratio(s) for s in range(4)] == pytest.approx([0.05, 0.2, 0.45, 0.8])
    finally:
        SPARSITY_DECAYS.unregister("square")
    with pytest.raises(Exception, match="sparsity_decay_type='square'"):
        WeightPruningConfig(sparsity_decay_type="square")
