"""What users of torch.nn.utils.prune complain of, fixed without breaking compatibility."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nc_prune.torch import prune as ours

from .helpers import Net, assert_same_error, assert_same_state, make_input


def _pruned(lib=ours):
    torch.manual_seed(0)
    net = Net()
    lib.l1_unstructured(net.fc1, "weight", amount=0.5)
    lib.ln_structured(net.conv, "weight", amount=1, n=2, dim=0)
    lib.random_unstructured(net.fc2, "bias", amount=1)
    return net


def test_deepcopy_works_where_torch_fails_and_the_copy_is_independent():
    with pytest.raises(RuntimeError):
        copy.deepcopy(_pruned(torch_prune))
    net = _pruned()
    clone = copy.deepcopy(net)
    assert_same_state(net, clone)
    x = make_input()
    assert torch.equal(net(x), clone(x))
    assert clone.fc1.weight_orig is not net.fc1.weight_orig
    with torch.no_grad():
        clone.fc1.weight_orig.add_(1.0)
    assert not torch.equal(net.fc1.weight, clone.fc1.weight)
    assert torch.equal(clone.fc1.weight, clone.fc1.weight_orig * clone.fc1.weight_mask)
    ours.l1_unstructured(clone.fc1, "bias", amount=2)  # pruning the copy further leaves the original alone
    assert isinstance(net.fc1.bias, nn.Parameter) and "bias_mask" not in net.fc1._buffers
    ours.remove(clone.fc1, "weight")
    assert "weight_orig" in dict(net.fc1.named_parameters())


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pruned_model_pickles_and_stays_pruned(how):
    net = _pruned()
    if how == "pickle":
        back = pickle.loads(pickle.dumps(net))
    else:
        buf = io.BytesIO()
        torch.save(net, buf)
        buf.seek(0)
        back = torch.load(buf, weights_only=False)
    assert_same_state(net, back)
    assert ours.is_pruned(back) and repr(back) == repr(net)
    x = make_input()
    assert torch.equal(net(x), back(x))
    ours.remove(back.fc1, "weight")
    assert isinstance(back.fc1.weight, nn.Parameter) and int((back.fc1.weight == 0).sum()) == 256


def test_weight_is_fresh_right_after_load_state_dict():
    a, b = _pruned(torch_prune), _pruned()
    state = {k: (v + 1.0 if k.endswith("weight_orig") else v) for k, v in b.state_dict().items()}
    a.load_state_dict(state)
    b.load_state_dict(state)
    expected = state["fc1.weight_orig"] * state["fc1.weight_mask"]
    assert not torch.equal(a.fc1.weight, expected)  # PyTorch: stale until the next forward
    assert torch.equal(b.fc1.weight, expected)


def test_weight_is_fresh_right_after_an_optimizer_step_and_pruned_entries_stay_zero():
    net = _pruned()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    pruned = net.fc1.weight_mask == 0
    before = net.fc1.weight_orig.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        net(make_input()).square().sum().backward()
        opt.step()
        assert torch.equal(net.fc1.weight, net.fc1.weight_orig * net.fc1.weight_mask)
        assert int((net.fc1.weight[pruned] != 0).sum()) == 0
    assert torch.equal(net.fc1.weight_orig[pruned], before[pruned])  # masked entries get zero gradient
    assert not torch.equal(net.fc1.weight_orig[~pruned], before[~pruned])


def test_a_second_pruning_ranks_the_current_weights_not_the_last_forward_ones():
    new_values = torch.arange(1.0, 513.0).reshape(8, 64).flip(1)
    nets = {lib: _pruned(lib) for lib in (torch_prune, ours)}
    old_mask = nets[ours].fc1.weight_mask.clone()
    for lib, net in nets.items():
        with torch.no_grad():
            net.fc1.weight_orig.copy_(new_values)  # as an optimizer would; no forward after it
        lib.l1_unstructured(net.fc1, "weight", amount=64)
    cut = new_values[old_mask == 1].sort().values[63]
    expected = old_mask.clone()
    expected[(old_mask == 1) & (new_values <= cut)] = 0
    assert torch.equal(nets[ours].fc1.weight_mask, expected)
    assert not torch.equal(nets[torch_prune].fc1.weight_mask, expected)  # PyTorch ranked stale values


def test_to_dtype_is_reflected_at_once():
    net = _pruned().double()
    assert net.fc1.weight.dtype == torch.float64
    assert torch.equal(net.fc1.weight, net.fc1.weight_orig * net.fc1.weight_mask)


def test_assigning_a_pruned_tensor_is_an_error_that_says_what_to_do():
    net = _pruned()
    with pytest.raises(AttributeError, match="weight_orig"):
        net.fc1.weight = torch.zeros(8, 64)
    a = _pruned(torch_prune)
    a.fc1.weight = nn.Parameter(torch.zeros(8, 64))  # PyTorch takes a new Parameter, then breaks:
    with pytest.raises(TypeError):
        a(make_input())
    with pytest.raises(KeyError):  # nc_prune refuses it at once
        net.fc1.weight = nn.Parameter(torch.zeros(8, 64))
    assert torch.equal(net(make_input()), _pruned()(make_input()))


def test_functional_call_sees_the_substituted_parameter():
    net = _pruned()
    new = torch.ones(8, 64)
    out = torch.func.functional_call(net.fc1, {"weight_orig": new}, (torch.ones(1, 64),))
    expected = nn.functional.linear(torch.ones(1, 64), new * net.fc1.weight_mask, net.fc1.bias)
    assert torch.equal(out, expected)


def test_state_dicts_cross_load_between_the_two_libraries():
    a, b = _pruned(torch_prune), _pruned()
    b.load_state_dict(a.state_dict())
    a.load_state_dict(b.state_dict())
    x = make_input()
    a(x)  # refresh PyTorch's copy of weight
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("earlier", [1, 2])
def test_a_failed_further_pruning_keeps_the_earlier_ones(earlier):
    net = _pruned()
    if earlier == 2:
        ours.random_structured(net.fc1, "weight", amount=1, dim=0)
    hooks_before = list(net.fc1._forward_pre_hooks.values())
    methods_before = list(hooks_before[0]) if earlier == 2 else None
    mask_before = net.fc1.weight_mask.clone()
    with pytest.raises(ValueError):
        ours.l1_unstructured(net.fc1, "weight", amount=10_000)
    with pytest.raises(IndexError):
        ours.ln_structured(net.fc1, "weight", amount=1, n=2, dim=5)
    assert list(net.fc1._forward_pre_hooks.values()) == hooks_before
    if earlier == 2:
        assert list(hooks_before[0]) == methods_before
    assert torch.equal(net.fc1.weight_mask, mask_before) and ours.is_pruned(net.fc1)


def _named(method, name="weight"):
    method._tensor_name = name
    return method


BAD_CALLS = {
    "amount type": (lambda P, n: P.l1_unstructured(n.fc1, "weight", amount="half"), TypeError),
    "negative count": (lambda P, n: P.l1_unstructured(n.fc1, "weight", amount=-1), ValueError),
    "fraction above 1": (lambda P, n: P.random_unstructured(n.fc1, "weight", amount=1.2), ValueError),
    "count above size": (lambda P, n: P.l1_unstructured(n.fc2, "weight", amount=25), ValueError),
    "structured 1-D": (lambda P, n: P.ln_structured(n.fc1, "bias", amount=1, n=1, dim=0), ValueError),
    "dim out of range": (lambda P, n: P.random_structured(n.fc1, "weight", amount=1, dim=2), IndexError),
    "scores shape": (lambda P, n: P.l1_unstructured(n.fc1, "weight", 1, importance_scores=torch.ones(3)),
                     AssertionError),
    "no such name": (lambda P, n: P.l1_unstructured(n.fc1, "kernel", amount=1), AttributeError),
    "custom mask shape": (lambda P, n: P.custom_from_mask(n.fc2, "weight", mask=torch.ones(2, 2)),
                          AssertionError),
    "remove unpruned": (lambda P, n: P.remove(n.fc1, "weight"), ValueError),
    "container of non-method": (lambda P, n: P.PruningContainer(_named(P.Identity())).add_pruning_method(3),
                                TypeError),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_what_torch_raises_and_leaves_the_module_alone(case):
    b = assert_same_error(*BAD_CALLS[case])
    assert [n for n, _ in b.named_parameters()] == [n for n, _ in Net().named_parameters()]
    assert type(b.fc1) is nn.Linear


def test_container_refuses_a_method_for_another_tensor():
    first, other = ours.Identity(), ours.Identity()
    first._tensor_name, other._tensor_name = "weight", "bias"
    with pytest.raises(ValueError, match="'weight'"):
        ours.PruningContainer(first).add_pruning_method(other)
