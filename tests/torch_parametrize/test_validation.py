"""Every constructor and call argument is checked, with a message naming the class, the value, the rule and the fix.

Also: zero-size weights in the schemes and in ``attach_prune_impl``, and the regexes of ``attach_prune_impl``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nc_prune import ConfigError, PatternShapeError
from nc_prune.core.errors import ConfigTypeError
from nc_prune.torch.prune_impl import (BlockStructured, ChannelStructured, ConstantSparsitySchedule,
                                       MagnitudePruneImpl, NMStructured, PolynomialDecaySchedule,
                                       SparsityScheduleBase, Unstructured, attach_prune_impl, prune_impls,
                                       scheme_mask)

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")

TARGET = "the fraction of weights to prune in the end, a number in [0, 1] such as 0.5"


# ---- PruneImplBase ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, error, message", [
    (True, ConfigTypeError, f"MagnitudePruneImpl: target_sparsity must be {TARGET}, got bool True"),
    (np.True_, ConfigTypeError, f"MagnitudePruneImpl: target_sparsity must be {TARGET}, got bool np.True_"),
    ("0.5", ConfigTypeError, f"MagnitudePruneImpl: target_sparsity must be {TARGET}, got str '0.5'"),
    (math.nan, ConfigError, f"MagnitudePruneImpl: target_sparsity=nan is out of range; it must be {TARGET}"),
    (math.inf, ConfigError, f"MagnitudePruneImpl: target_sparsity=inf is out of range; it must be {TARGET}"),
    (-0.25, ConfigError, f"MagnitudePruneImpl: target_sparsity=-0.25 is out of range; it must be {TARGET}"),
])
def test_target_sparsity_must_be_a_fraction(value, error, message):
    with pytest.raises(error) as info:
        MagnitudePruneImpl(value, Unstructured())
    assert str(info.value) == message


def test_a_numpy_target_is_kept_as_a_float():
    impl = MagnitudePruneImpl(np.float32(0.25), Unstructured())
    assert impl.target_sparsity == 0.25 and type(impl.target_sparsity) is float


def test_update_sparsity_names_a_bad_step_and_a_bad_schedule():
    impl = MagnitudePruneImpl(0.5, Unstructured(), schedule=ConstantSparsitySchedule(begin_step=1))
    with pytest.raises(ConfigTypeError) as info:
        impl.update_sparsity(True)
    assert str(info.value) == "MagnitudePruneImpl.update_sparsity(): step_count must be an int >= 0, got bool True"
    impl.update_sparsity(np.int64(2))
    assert impl.sparsity == 0.5
    impl.schedule = "polynomial_decay"
    with pytest.raises(ConfigTypeError) as info:
        impl.update_sparsity(3)
    assert str(info.value) == ("MagnitudePruneImpl.update_sparsity(): impl.schedule is a str, not a "
                               "SparsityScheduleBase; set it to a schedule such as "
                               "PolynomialDecaySchedule(total_iters=...), or to None")
    assert impl.sparsity == 0.5


def test_a_schedule_returning_nan_is_named():
    class Broken(SparsityScheduleBase):
        def compute_sparsity(self, step_count, target_sparsity, prev_sparsity=None):
            return math.nan if step_count else 0.0

    impl = MagnitudePruneImpl(0.5, Unstructured(), schedule=Broken())
    with pytest.raises(ConfigError) as info:
        impl.update_sparsity(1)
    assert str(info.value) == ("Broken.compute_sparsity(): returned sparsity=nan is out of range; it must be a "
                               "fraction in [0, 1]")
    assert impl.sparsity == 0.0


# ---- schemes ----------------------------------------------------------------------------------------------
AXIS_RULE = ("axis names the output (0) or input (1) channels of the (out, in, *kernel) weight layout; a negative "
             "axis counts from the last dimension (-1 is the input axis of a Linear weight)")


@pytest.mark.parametrize("make, error, message", [
    (lambda: ChannelStructured(axis=2), ConfigError, f"ChannelStructured(axis=2): {AXIS_RULE}"),
    (lambda: ChannelStructured(axis=7), ConfigError, f"ChannelStructured(axis=7): {AXIS_RULE}"),
    (lambda: ChannelStructured(axis=True), ConfigTypeError, "ChannelStructured.axis must be an int (0 or 1), got "
                                                            "bool True"),
    (lambda: ChannelStructured(axis=1.0), ConfigTypeError, "ChannelStructured.axis must be an int (0 or 1), got "
                                                           "float 1.0"),
    (lambda: BlockStructured(block_size=(4,)), ConfigTypeError, "BlockStructured.block_size must be a pair (rows, "
                                                                "cols) of ints >= 1, e.g. (4, 1); got tuple (4,)"),
    (lambda: BlockStructured(block_size="4x1"), ConfigTypeError, "BlockStructured.block_size must be a pair (rows, "
                                                                 "cols) of ints >= 1, e.g. (4, 1); got str '4x1'"),
    (lambda: BlockStructured(block_size=(4.0, 1)), ConfigTypeError, "BlockStructured: block_size[0] must be an int "
                                                                    ">= 1, got float 4.0"),
    (lambda: BlockStructured(block_size=(4, False)), ConfigTypeError, "BlockStructured: block_size[1] must be an int "
                                                                      ">= 1, got bool False"),
    (lambda: BlockStructured(block_size=(2, 0)), ConfigError, "BlockStructured: block_size[1]=0 is too small; it must "
                                                              "be an int >= 1"),
    (lambda: NMStructured(n=0, m=4), ConfigError, "NMStructured: n=0 is too small; it must be an int >= 1"),
    (lambda: NMStructured(n=2, m=True), ConfigTypeError, "NMStructured: m must be an int >= 1, got bool True"),
])
def test_scheme_arguments_are_checked_at_construction(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value) == message


def test_scheme_integers_may_be_numpy_and_a_block_size_a_list_which_stays_as_given():
    size = [2, 1]
    block = BlockStructured(block_size=size)
    assert block.block_size == (2, 1) and size == [2, 1] and block == BlockStructured((2, 1))
    assert hash(block) == hash(BlockStructured((2, 1)))
    channel, nm = ChannelStructured(axis=np.int64(1)), NMStructured(n=np.int64(1), m=np.int32(4))
    assert type(channel.axis) is int and channel == ChannelStructured(1)
    assert (type(nm.n), type(nm.m)) == (int, int) and nm == NMStructured(1, 4) and nm.max_sparsity == 0.25


def test_a_negative_axis_that_resolves_outside_the_channels_names_the_layer():
    with pytest.raises(ConfigError) as info:
        ChannelStructured(axis=-1).check("features.0", (8, 3, 3, 3))
    assert str(info.value) == ("'features.0': ChannelStructured(axis=-1) on a weight of shape (8, 3, 3, 3): axis must "
                               "name the output (0) or input (1) channels of the (out, in, *kernel) layout")


@pytest.mark.parametrize("scheme", [Unstructured(), ChannelStructured(0), ChannelStructured(1),
                                    BlockStructured((4, 1)), NMStructured(2, 4)], ids=repr)
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (2, 0, 3, 3)])
def test_a_zero_size_weight_is_refused_by_every_scheme(scheme, shape):
    with pytest.raises(PatternShapeError) as info:
        scheme_mask(torch.ones(shape), 0.5, scheme, name="head")
    assert str(info.value) == (f"'head': a weight of shape {shape} holds no weights, so {scheme!r} has nothing to "
                               f"prune there; leave that layer unpruned (a zero-size weight needs none)")


def test_a_zero_size_bias_is_refused_too_and_a_1d_misfit_names_the_weight():
    with pytest.raises(PatternShapeError, match=r"^'weight': a weight of shape \(0,\) holds no weights"):
        MagnitudePruneImpl.compute_mask(torch.ones(0), 0.5, Unstructured())
    with pytest.raises(PatternShapeError) as info:
        NMStructured(2, 4).check("fc.bias", (8,))
    assert str(info.value) == "'fc.bias': NMStructured needs a weight of 2 or more dimensions (out, in, *kernel), " \
                              "got shape (8,)"


def test_registering_on_a_zero_size_layer_fails_and_leaves_it_unchanged():
    layer = nn.Linear(0, 3)
    with pytest.raises(PatternShapeError, match=r"a weight of shape \(3, 0\) holds no weights"):
        parametrize.register_parametrization(layer, "weight", MagnitudePruneImpl(0.5, Unstructured()))
    assert not parametrize.is_parametrized(layer) and isinstance(layer.weight, nn.Parameter)


# ---- schedules --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, message", [
    (lambda: PolynomialDecaySchedule(total_iters=3, power=math.inf), ConfigError,
     "PolynomialDecaySchedule: power=inf is out of range; it must be a finite number > 0 (1 is linear, 3 cubic)"),
    (lambda: PolynomialDecaySchedule(total_iters=3, power=math.nan), ConfigError,
     "PolynomialDecaySchedule: power=nan is out of range; it must be a finite number > 0 (1 is linear, 3 cubic)"),
    (lambda: PolynomialDecaySchedule(total_iters=3, initial_sparsity=True), ConfigTypeError,
     "PolynomialDecaySchedule: initial_sparsity must be a fraction in [0, 1] such as 0.5, got bool True"),
    (lambda: PolynomialDecaySchedule(total_iters=2.0), ConfigTypeError,
     "PolynomialDecaySchedule: total_iters must be an int >= 1, got float 2.0"),
    (lambda: PolynomialDecaySchedule(total_iters=3, update_frequency=0), ConfigError,
     "PolynomialDecaySchedule: update_frequency=0 is too small; it must be an int >= 1"),
    (lambda: ConstantSparsitySchedule(begin_step=-2), ConfigError,
     "ConstantSparsitySchedule: begin_step=-2 is too small; it must be an int >= 0"),
])
def test_schedule_arguments_are_checked_at_construction(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value) == message


def test_schedule_integers_may_be_numpy():
    s = PolynomialDecaySchedule(total_iters=np.int64(4), begin_step=np.int32(1), power=np.float32(1.0))
    assert (type(s.total_iters), type(s.begin_step), type(s.power)) == (int, int, float)
    assert s == PolynomialDecaySchedule(total_iters=4, begin_step=1, power=1.0)
    assert [round(s.compute_sparsity(i, 0.6), 6) for i in range(6)] == [0.0, 0.0, 0.2, 0.4, 0.6, 0.6]


@pytest.mark.parametrize("schedule", [ConstantSparsitySchedule(begin_step=1), PolynomialDecaySchedule(total_iters=3)],
                         ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("step, target, error, rule", [
    (-1, 0.5, ConfigError, "step_count=-1 is too small; it must be an int >= 0"),
    (1.5, 0.5, ConfigTypeError, "step_count must be an int >= 0, got float 1.5"),
    (True, 0.5, ConfigTypeError, "step_count must be an int >= 0, got bool True"),
    (2, math.nan, ConfigError, "target_sparsity=nan is out of range; it must be a fraction in [0, 1] such as 0.5"),
    (2, 1.5, ConfigError, "target_sparsity=1.5 is out of range; it must be a fraction in [0, 1] such as 0.5"),
    (2, True, ConfigTypeError, "target_sparsity must be a fraction in [0, 1] such as 0.5, got bool True"),
])
def test_compute_sparsity_checks_its_arguments(schedule, step, target, error, rule):
    with pytest.raises(error) as info:
        schedule.compute_sparsity(step, target)
    assert str(info.value) == f"{type(schedule).__name__}.compute_sparsity(): {rule}"


# ---- attach_prune_impl --------------------------------------------------------------------------------------
def _net_with_an_empty_layer() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 0), nn.Linear(0, 2), nn.Linear(2, 2))


def test_attach_refuses_a_zero_size_layer_naming_it_and_the_exclusion_that_skips_it():
    net = _net_with_an_empty_layer()
    with pytest.raises(PatternShapeError) as info:
        attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured())
    assert str(info.value) == (
        "attach_prune_impl(): '1': a weight of shape (0, 4) holds no weights, so Unstructured() has nothing to prune "
        "there; leave that layer unpruned (a zero-size weight needs none). To attach to the other layers, leave "
        "this one out with excluded_op_names=['^1$']")
    assert list(prune_impls(net)) == []  # nothing attached when a layer is refused
    impls = attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured(),
                              excluded_op_names=["^1$", "^2$"])
    assert sorted(impls) == ["0", "3"] and int((net[0].weight == 0).sum()) == 16


@pytest.mark.parametrize("key, patterns, index", [("op_names", ["^0$", "fc[0"], 1),
                                                   ("excluded_op_names", ["(head"], 0)])
def test_attach_reports_an_invalid_regex_as_a_config_error(key, patterns, index):
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ConfigError) as info:
        attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured(), **{key: patterns})
    bad = patterns[index]
    try:
        re.compile(bad)
    except re.error as exc:
        reason = str(exc)
    assert str(info.value) == (f"attach_prune_impl(): {key}[{index}] = {bad!r} is not a valid regular expression: "
                               f"{reason}. Fix it, or pass re.escape(name) to match a layer name literally")
    assert not isinstance(info.value, re.error) and list(prune_impls(net)) == []


def test_attach_names_a_regex_that_is_not_a_string():
    net = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigTypeError) as info:
        attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured(), op_names=["0", 1])
    assert str(info.value) == "attach_prune_impl(): op_names[1] must be a regex string, got int 1"
    with pytest.raises(ConfigTypeError) as info:
        attach_prune_impl(net, "default", target_sparsity=0.5, pruning_scheme=Unstructured(), excluded_op_names="0")
    assert str(info.value) == ("attach_prune_impl(): excluded_op_names is a list of regexes; got str '0'. Wrap a "
                               "single one in a list: excluded_op_names=['0']")
