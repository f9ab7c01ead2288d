"""global_unstructured against PyTorch's, and the exact selection that replaces its torch.topk."""

from __future__ import annotations

import pytest
import torch

from nc_prune.torch import prune as ours
from nc_prune.torch.prune._select import topk_masks

from .helpers import assert_same_error, make_input, run_twins
from .test_differential import _make_foobar


def _params(net):
    return [(net.conv, "weight"), (net.fc1, "weight"), (net.fc2, "weight"), (net.fc1, "bias")]


@pytest.mark.parametrize("amount", [0.0, 0.35, 0.9, 1.0, 0, 123, 500])
def test_l1_global_same_as_torch(amount):
    run_twins(lambda P, net: P.global_unstructured(_params(net), P.L1Unstructured, amount=amount), x=make_input())


def test_l1_global_with_importance_scores_and_earlier_pruning():
    def scenario(P, net):
        P.l1_unstructured(net.fc1, "weight", amount=0.5)
        P.ln_structured(net.conv, "weight", amount=1, n=2, dim=0)
        net(make_input())
        scores = {(net.fc1, "weight"): net.fc1.weight.detach().flip(0) * 3,
                  (net.fc2, "weight"): torch.linspace(-1, 1, 24).reshape(3, 8)}
        P.global_unstructured(_params(net), P.L1Unstructured, importance_scores=scores, amount=0.4)
        net(make_input())
        P.global_unstructured(_params(net), P.L1Unstructured, amount=50)  # a second global round
    run_twins(scenario, x=make_input())


def test_l1_global_with_ties_across_layers():
    def scenario(P, net):
        with torch.no_grad():
            for m in (net.conv, net.fc1, net.fc2):
                m.weight.copy_((torch.arange(m.weight.numel()).reshape(m.weight.shape) % 4).float())
        P.global_unstructured(_params(net), P.L1Unstructured, amount=0.3)
    run_twins(scenario, x=make_input())


def test_random_global_same_as_torch_with_the_same_seed():
    def scenario(P, net):
        P.l1_unstructured(net.fc1, "weight", amount=0.25)
        P.global_unstructured(_params(net), P.RandomUnstructured, amount=0.5)
    run_twins(scenario, x=make_input())


def test_custom_unstructured_method_runs_globally_as_in_torch():
    def scenario(P, net):
        P.l1_unstructured(net.fc2, "weight", amount=5)
        P.global_unstructured(_params(net), _make_foobar(P.BasePruningMethod))
    run_twins(scenario, x=make_input())


def test_fast_path_does_not_sort_and_ties_fall_back_to_topk(monkeypatch):
    calls = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda *a, **k: calls.append(1) or real(*a, **k))
    from .helpers import Net
    torch.manual_seed(0)
    net = Net()
    ours.global_unstructured(_params(net), ours.L1Unstructured, amount=0.5)
    assert calls == []  # random weights: the cut is unique, so no sort is needed
    assert sum(int((net.get_submodule(m).weight_mask == 0).sum()) for m in ("conv", "fc1", "fc2")) \
        + int((net.fc1.bias_mask == 0).sum()) == round(0.5 * (72 + 512 + 24 + 8))
    with torch.no_grad():
        net.fc2.weight_orig.fill_(0.5)
    ours.l1_unstructured(net.fc2, "weight", amount=0.5)  # 12 of 24 equal values: only topk's order decides
    assert calls == [1]


def test_generator_of_parameters_is_read_once():
    from .helpers import twins
    a, b = twins()
    ours.global_unstructured(_params(a), ours.L1Unstructured, amount=40)
    ours.global_unstructured(iter(_params(b)), ours.L1Unstructured, amount=40)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("call, builtin", [
    (lambda P, net: P.global_unstructured(5, P.L1Unstructured, amount=1), TypeError),
    (lambda P, net: P.global_unstructured(_params(net), P.L1Unstructured, importance_scores=[1], amount=1),
     TypeError),
    (lambda P, net: P.global_unstructured(_params(net), P.LnStructured, amount=1, n=1, dim=0), TypeError),
    (lambda P, net: P.global_unstructured(_params(net), P.L1Unstructured, amount=10_000), ValueError),
    (lambda P, net: P.global_unstructured(_params(net), P.L1Unstructured, amount=1.5), ValueError),
])
def test_global_errors_have_torch_types(call, builtin):
    assert_same_error(call, builtin)


# ---- topk_masks: the selection itself, against torch.topk on the concatenation ----------------------
def _reference(values, k, largest):
    joined = torch.cat([v.reshape(-1) for v in values])
    picked = torch.zeros(joined.numel(), dtype=torch.bool)
    picked[torch.topk(joined, k, largest=largest).indices] = True
    return list(torch.split(picked, [v.numel() for v in values]))


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("kind", ["random", "ties", "zeros", "mixed_dtypes", "with_empty", "nan"])
def test_topk_masks_equal_torch_topk(kind, largest):
    g = torch.Generator().manual_seed(3)
    if kind == "random":
        values = [torch.randn(40, 7, generator=g), torch.randn(333, generator=g), torch.randn(2, 2, 5, generator=g)]
    elif kind == "ties":
        values = [torch.randint(0, 3, (50,), generator=g).float(), torch.randint(0, 3, (70,), generator=g).float()]
    elif kind == "zeros":
        values = [torch.zeros(30), torch.rand(30, generator=g), -torch.zeros(30)]
    elif kind == "mixed_dtypes":
        values = [torch.rand(60, generator=g).half(), torch.rand(60, generator=g).double()]
    elif kind == "with_empty":
        values = [torch.rand(0), torch.rand(25, generator=g), torch.rand(0, 4)]
    else:
        values = [torch.tensor([1.0, float("nan"), 0.5, 2.0]), torch.tensor([float("nan"), 0.1])]
    total = sum(v.numel() for v in values)
    for k in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        got = topk_masks(values, k, largest=largest)
        ref = _reference(values, k, largest) if 0 < k < total else None
        assert [int(m.sum()) for m in got] == ([int(m.sum()) for m in ref] if ref else [v.numel() * (k > 0)
                                                                                      for v in values])
        if ref is not None:
            assert all(torch.equal(a, b) for a, b in zip(got, ref)), (kind, k)
