"""The same scenarios through torch.nn.utils.prune and nc_prune.torch.prune: everything must match.

Each scenario is a function of the prune module, so one text runs against both. After each one the
twins are compared on state_dict keys/values/dtypes, parameter identity, buffers, hooks, the pruned
tensors, outputs and gradients, and again after ``remove``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from .helpers import Net, assert_same_state, assert_same_training, identity_map, make_input, original_ids, run_twins


def _l1_float(P, net):
    P.l1_unstructured(net.fc1, "weight", amount=0.3)


def _l1_int(P, net):
    P.l1_unstructured(net.conv, "weight", amount=17)


def _l1_bias_and_weight(P, net):
    P.l1_unstructured(net.fc2, "bias", amount=1)
    P.l1_unstructured(net.fc2, "weight", amount=0.5)


def _l1_importance(P, net):
    scores = torch.arange(net.fc1.weight.numel(), dtype=torch.float32).reshape(net.fc1.weight.shape).flip(0)
    P.l1_unstructured(net.fc1, "weight", amount=100, importance_scores=scores)


def _random_unstructured(P, net):
    P.random_unstructured(net.conv, "weight", amount=0.4)
    P.random_unstructured(net.fc2, "bias", amount=2)


def _random_structured(P, net):
    P.random_structured(net.conv, "weight", amount=2, dim=0)
    P.random_structured(net.fc1, "weight", amount=0.25, dim=1)
    P.random_structured(net.fc2, "weight", amount=0.5, dim=-1)


@pytest.mark.parametrize("n", [1, 2, float("inf"), float("-inf"), "fro"])
def test_ln_structured_every_norm(n):
    def scenario(P, net):
        if n != "fro":  # torch.norm's "fro" takes at most 2 dims, in both libraries
            P.ln_structured(net.conv, "weight", amount=0.5, n=n, dim=0)
        P.ln_structured(net.fc1, "weight", amount=5, n=n, dim=1)
    run_twins(scenario, x=make_input())


def _identity(P, net):
    P.identity(net.fc1, "weight")
    P.identity(net.conv, "bias")


def _custom_mask(P, net):
    P.custom_from_mask(net.fc2, "weight", mask=(torch.arange(24).reshape(3, 8) % 3 != 0))
    P.custom_from_mask(net.fc2, "bias", mask=torch.tensor([0, 1, 0]))


def _iterative(P, net):
    x = make_input()
    P.l1_unstructured(net.fc1, "weight", amount=0.2)
    net(x)  # torch.nn.utils.prune's weight is only fresh after a forward
    P.ln_structured(net.fc1, "weight", amount=2, n=2, dim=0)
    P.random_unstructured(net.fc1, "weight", amount=0.1)
    P.random_structured(net.fc1, "weight", amount=0.5, dim=1)
    P.l1_unstructured(net.fc1, "weight", amount=30)
    P.custom_from_mask(net.fc1, "weight", mask=torch.ones(8, 64).tril())
    P.ln_structured(net.conv, "weight", amount=1, n=1, dim=1)
    P.l1_unstructured(net.conv, "weight", amount=0.5)


def _ties(P, net):
    with torch.no_grad():  # many equal magnitudes: the cut falls inside a run of ties
        net.fc1.weight.copy_((torch.arange(512).reshape(8, 64) % 5 - 2).float())
        net.conv.weight.zero_()
    P.l1_unstructured(net.fc1, "weight", amount=0.5)
    P.l1_unstructured(net.conv, "weight", amount=10)
    P.ln_structured(net.fc2, "weight", amount=3, n=1, dim=1)


def _rounding(P, net):
    P.l1_unstructured(net.fc2, "bias", amount=0.5)  # 1.5 rounds to 2
    P.random_structured(net.fc2, "weight", amount=0.3125, dim=1)  # 2.5 rounds to 2 (ties to even)
    P.ln_structured(net.conv, "weight", amount=0.625, n=2, dim=0)  # 2.5 -> 2


def _zero_and_full(P, net):
    P.l1_unstructured(net.fc1, "weight", amount=0)
    P.l1_unstructured(net.fc1, "weight", amount=0.0)
    P.random_structured(net.conv, "weight", amount=0, dim=0)
    P.l1_unstructured(net.fc2, "weight", amount=1.0)
    P.l1_unstructured(net.conv, "bias", amount=4)


def _container_by_hand(P, net):
    first = P.L1Unstructured(amount=0.5)
    first._tensor_name = "weight"
    second = P.RandomStructured(amount=1, dim=0)
    second._tensor_name = "weight"
    container = P.PruningContainer(first)
    container.add_pruning_method(second)
    mask = container.compute_mask(net.fc2.weight, default_mask=torch.ones(3, 8))
    P.custom_from_mask(net.fc2, "weight", mask=mask)
    assert len(container) == 2 and container[0] is first and list(container) == [first, second]


def _method_prune(P, net):
    t = net.fc1.weight.detach().clone()
    out = P.L1Unstructured(amount=0.5).prune(t, importance_scores=t.flip(1))
    P.custom_from_mask(net.fc1, "weight", mask=out != 0)
    structured = P.LnStructured(amount=1, n=2, dim=0).prune(net.fc2.weight.detach(), default_mask=torch.ones(3, 8))
    P.custom_from_mask(net.fc2, "weight", mask=structured != 0)


SCENARIOS = {
    "l1_float": _l1_float, "l1_int": _l1_int, "l1_bias_and_weight": _l1_bias_and_weight,
    "l1_importance": _l1_importance, "random_unstructured": _random_unstructured,
    "random_structured": _random_structured, "identity": _identity, "custom_mask": _custom_mask,
    "iterative": _iterative, "ties": _ties, "rounding": _rounding, "zero_and_full": _zero_and_full,
    "container_by_hand": _container_by_hand, "method_prune": _method_prune,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_as_torch(name):
    a, b = run_twins(SCENARIOS[name], x=make_input())
    # and after making it permanent
    from torch.nn.utils import prune as torch_prune
    from nc_prune.torch import prune as ours
    for mod_a, mod_b in zip(a.modules(), b.modules()):
        for key in [k for k in mod_a._buffers if k.endswith("_mask")]:
            torch_prune.remove(mod_a, key[:-5])
            ours.remove(mod_b, key[:-5])
    assert not ours.is_pruned(b) and type(b.fc1) is nn.Linear and type(b.conv) is nn.Conv2d
    assert_same_state(a, b)
    assert_same_training(a, b, make_input(5))


def test_parameter_objects_survive_prune_and_remove():
    from nc_prune.torch import prune as ours
    net = Net()
    before = original_ids(net)
    weight = net.fc1.weight
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ours.l1_unstructured(net.fc1, "weight", amount=0.5)
    assert net.fc1.weight_orig is weight
    assert set(identity_map(net, before).values()) == set(before.values())
    ours.remove(net.fc1, "weight")
    assert net.fc1.weight is weight and any(p is weight for p in opt.param_groups[0]["params"])
    assert int((weight == 0).sum()) == 256


def test_pruned_weight_and_bias_of_one_module_are_independent():
    def scenario(P, net):
        P.l1_unstructured(net.fc1, "weight", amount=0.5)
        P.l1_unstructured(net.fc1, "bias", amount=3)
        P.remove(net.fc1, "weight")
    a, b = run_twins(scenario, x=make_input())
    assert [n for n, _ in b.fc1.named_parameters()] == ["bias_orig", "weight"]
    assert int((b.fc1.bias == 0).sum()) == 3


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))  # the pruned weight is read twice per forward


def test_weight_read_twice_per_forward():
    run_twins(lambda P, m: P.l1_unstructured(m.fc, "weight", amount=0.5), factory=_Tied, x=torch.randn(3, 4))


def test_float64_and_float16_modules():
    run_twins(lambda P, net: P.l1_unstructured(net.fc1, "weight", amount=0.5),
              factory=lambda: Net().double(), x=make_input().double())
    a, b = run_twins(lambda P, net: (P.l1_unstructured(net.fc1, "weight", amount=0.5),
                                     P.ln_structured(net.conv, "weight", amount=2, n=1, dim=0)),
                     factory=lambda: Net().half())
    assert b.fc1.weight_mask.dtype == torch.float16


def test_importance_scores_of_another_dtype_give_mask_of_that_dtype():
    def scenario(P, net):
        P.ln_structured(net.fc1, "weight", amount=2, n=2, dim=0, importance_scores=net.fc1.weight.double() + 1)
    a, b = run_twins(scenario, x=make_input())
    assert b.fc1.weight_mask.dtype == torch.float64


def _make_foobar(base):
    class FooBarPruningMethod(base):
        """The custom method of PyTorch's pruning tutorial: prune every other entry."""

        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    return FooBarPruningMethod


def test_a_custom_method_written_for_torch_runs_unchanged():
    def scenario(P, net):
        method = _make_foobar(P.BasePruningMethod)
        method.apply(net.fc1, "bias")
        P.l1_unstructured(net.fc1, "bias", amount=2)
        method.apply(net.fc1, "bias")
        method.apply(net.fc2, "weight")
    run_twins(scenario, x=make_input())


def test_lstm_sees_the_fresh_weight():
    def scenario(P, lstm):
        P.l1_unstructured(lstm, "weight_ih_l0", amount=0.5)
        P.ln_structured(lstm, "weight_hh_l0", amount=2, n=2, dim=0)
    factory = lambda: nn.LSTM(3, 4)  # noqa: E731
    a, b = run_twins(scenario, factory=factory)
    assert all(torch.equal(x, y) for x, y in zip(a._flat_weights, b._flat_weights))  # before any forward
    x = torch.randn(5, 2, 3)
    assert torch.equal(a(x)[0], b(x)[0])
    assert torch.equal(b._flat_weights[0], b.weight_ih_l0)
