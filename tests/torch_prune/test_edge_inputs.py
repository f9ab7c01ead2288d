"""Inputs at the edges: zero-size layers in the pattern methods and global_structured, empty parameter lists."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nc_prune import NoPrunableLayerError, PatternShapeError
from nc_prune.torch import prune

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")

PATTERN_CALLS = {
    "pattern_structured 4x1": lambda m: prune.pattern_structured(m, "weight", amount=0.5, pattern="4x1"),
    "pattern_structured 1xchannel": lambda m: prune.pattern_structured(m, "weight", amount=0.5, pattern="1xchannel"),
    "pattern_structured channelx1": lambda m: prune.pattern_structured(m, "weight", amount=1, pattern="channelx1"),
    "pattern_structured 1x1": lambda m: prune.pattern_structured(m, "weight", amount=0.0, pattern="1x1"),
    "nxm_structured": lambda m: prune.nxm_structured(m, "weight", amount=0.5, pattern="2x1"),
    "n_m_structured": lambda m: prune.n_m_structured(m, "weight", "2:4"),
}


@pytest.mark.parametrize("in_features, out_features", [(0, 4), (4, 0)])
@pytest.mark.parametrize("call", list(PATTERN_CALLS))
def test_pattern_methods_refuse_a_zero_size_weight_and_name_it(call, in_features, out_features):
    m = nn.Linear(in_features, out_features)
    with pytest.raises(PatternShapeError) as info:
        PATTERN_CALLS[call](m)
    shape = (out_features, in_features)
    message = str(info.value)
    assert message.startswith(f"Linear.weight has shape {shape}, with no weights in it, so pattern '")
    assert message.endswith("' has nothing to prune there; leave it out of pruning (a zero-size tensor needs none)")
    assert isinstance(info.value, ValueError) and not prune.is_pruned(m) and isinstance(m.weight, nn.Parameter)


def test_a_zero_size_weight_pruned_before_keeps_its_earlier_pruning():
    m = nn.Linear(0, 4)
    prune.l1_unstructured(m, "weight", amount=0.5)
    with pytest.raises(PatternShapeError, match=r"Linear.weight has shape \(4, 0\)"):
        prune.nxm_structured(m, "weight", amount=0.5)
    hooks = list(m._forward_pre_hooks.values())
    assert [type(h) for h in hooks] == [prune.L1Unstructured] and m.weight_mask.shape == (4, 0)


def test_pattern_compute_mask_on_a_zero_size_tensor_names_the_tensor():
    method = prune.PatternStructured(amount=0.5, pattern="1xchannel")
    with pytest.raises(PatternShapeError) as info:
        method.compute_mask(torch.ones(0, 3), default_mask=torch.ones(0, 3))
    assert str(info.value) == ("the tensor has shape (0, 3), with no weights in it, so pattern '1xchannel' has "
                               "nothing to prune there; leave it out of pruning (a zero-size tensor needs none)")


def _rows(out_features: int, in_features: int) -> nn.Linear:
    m = nn.Linear(in_features, out_features)
    with torch.no_grad():  # row r has mean |w| = r + 1: the lowest rows go first
        m.weight.copy_((torch.arange(out_features, dtype=torch.float32) + 1).unsqueeze(1).expand_as(m.weight))
    return m


def test_global_structured_leaves_a_zero_size_parameter_dense_with_a_warning():
    fits, empty = _rows(8, 6), nn.Linear(0, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.global_structured([(fits, "weight"), (empty, "weight")], amount=0.5, pattern="1xchannel",
                                max_sparsity_ratio_per_op=1.0)
    messages = [str(w.message) for w in caught if "global_structured" in str(w.message)]
    assert messages == ["global_structured(): parameters[1] (Linear.weight) has shape (5, 0), with no weights in it, "
                        "so pattern '1xchannel' has nothing to prune there; leave it out of pruning (a zero-size "
                        "tensor needs none); that parameter is left dense"]
    assert (fits.weight_mask.sum(dim=1) == 0).nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    assert empty.weight_mask.shape == (5, 0) and prune.is_pruned(empty)


def test_global_structured_with_only_zero_size_parameters_says_so():
    with pytest.raises(NoPrunableLayerError) as info:
        prune.global_structured([(nn.Linear(4, 0), "weight")], amount=0.5, pattern="4x1")
    assert str(info.value) == (
        "global_structured(): no parameter fits pattern '4x1': parameters[0] (Linear.weight) has shape (0, 4), with "
        "no weights in it, so pattern '4x1' has nothing to prune there; leave it out of pruning (a zero-size tensor "
        "needs none). Choose a pattern these shapes fit")


@pytest.mark.parametrize("func", ["global_unstructured", "global_structured"])
@pytest.mark.parametrize("empty", [[], (), iter([])], ids=["list", "tuple", "generator"])
def test_an_empty_parameter_list_is_a_clear_value_error(func, empty):
    call = {"global_unstructured": lambda: prune.global_unstructured(empty, prune.L1Unstructured, amount=0.5),
            "global_structured": lambda: prune.global_structured(empty, amount=0.5)}[func]
    with pytest.raises(NoPrunableLayerError) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (f"{func}(): parameters is empty, so there is nothing to prune; pass at least one "
                               f"(module, name) pair, e.g. [(model.fc, 'weight')]")
