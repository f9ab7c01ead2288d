"""The same scenarios through torch.nn.utils.prune and nc_prune.torch.prune: everything must match.

Each scenario is a function of the prune module, so one text runs against both. After each one the
twins are compared on state_dict keys/values/dtypes, parameter identity, buffers, hooks, the pruned
tensors, outputs and gradients, and again after ``remove``.
"""

from __future__ import annotations

import numpy as np
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


def _dim_spellings(P, net):
    """Any dim PyTorch indexes a shape with: a numpy int, a 0-d int tensor, even a bool."""
    P.ln_structured(net.conv, "weight", amount=1, n=2, dim=np.int64(-4))
    P.random_structured(net.fc1, "weight", amount=2, dim=torch.tensor(0))
    P.random_structured(net.fc2, "weight", amount=3, dim=True)


SCENARIOS = {
    "l1_float": _l1_float, "l1_int": _l1_int, "l1_bias_and_weight": _l1_bias_and_weight,
    "l1_importance": _l1_importance, "random_unstructured": _random_unstructured,
    "random_structured": _random_structured, "identity": _identity, "custom_mask": _custom_mask,
    "iterative": _iterative, "ties": _ties, "rounding": _rounding, "zero_and_full": _zero_and_full,
    "container_by_hand": _container_by_hand, "method_prune": _method_prune, "dim_spellings": _dim_spellings,
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


# ---- PyTorch's private helpers ---------------------------------------------------------------------------
def _outcome(call):
    """What ``call()`` gives: ``("value", result)`` or ``("error", exception type)``."""
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return "error", type(exc)
    return "value", result


T2 = torch.arange(12.).reshape(3, 4) - 5


@pytest.mark.parametrize("helper, args", [
    ("_validate_pruning_amount_init", a) for a in [(0,), (3,), (0.0,), (1.0,), (0.5,), (-1,), (1.5,), (-0.5,),
                                                   ("x",), (None,), (True,), (float("inf"),)]
] + [
    ("_validate_pruning_amount", a) for a in [(3, 4), (4, 4), (5, 4), (0.9, 0), (0, 0), (1, 0)]
] + [
    ("_compute_nparams_toprune", a) for a in [(0, 9), (7, 9), (1, 9), (1.0, 9), (0.5, 9), (0.25, 10), (0.35, 10)]
] + [
    ("_validate_structured_pruning", a) for a in [(T2,), (T2[0],), (torch.tensor(2.),), (torch.ones(2, 1, 3),)]
] + [
    ("_validate_pruning_dim", a) for a in [(T2, 0), (T2, 1), (T2, -1), (T2, 2), (T2, 7), (T2, "0")]
] + [
    ("_compute_norm", a) for a in [(T2, 2, 0), (T2, 1, 1), (T2, float("inf"), -1), (T2, "fro", -2), (T2, 2, 2),
                                   (T2, 2, -3), (torch.ones(2, 3, 4), 1, 1)]
])
def test_private_helpers_behave_as_torch(helper, args):
    from torch.nn.utils import prune as torch_prune
    from nc_prune.torch import prune as ours
    theirs_kind, theirs = _outcome(lambda: getattr(torch_prune, helper)(*args))
    our_kind, our = _outcome(lambda: getattr(ours, helper)(*args))
    assert our_kind == theirs_kind, (our, theirs)
    if theirs_kind == "error":
        assert issubclass(our, theirs)
    elif isinstance(theirs, torch.Tensor):
        assert torch.equal(our, theirs)
    else:
        assert our == theirs and type(our) is type(theirs)


# ---- the same exception type as PyTorch for the same bad input -------------------------------------------
def _remove_twice(P, net):
    P.l1_unstructured(net.fc1, "weight", amount=1)
    P.remove(net.fc1, "weight")
    P.remove(net.fc1, "weight")


def _taken(P, net):
    net.fc1.register_buffer("weight_orig", torch.zeros(1))
    P.l1_unstructured(net.fc1, "weight", amount=1)


def _buffer(P, net):
    net.fc1.register_buffer("scale", torch.ones(8))
    P.l1_unstructured(net.fc1, "scale", amount=1)


def _container(P, *methods):
    container = P.PruningContainer()
    container._tensor_name = "weight"
    for m in methods:
        container.add_pruning_method(m)
    return container


def _named(method, name):
    method._tensor_name = name
    return method


def _global(P, parameters, **kwargs):
    P.global_unstructured(parameters, pruning_method=P.L1Unstructured, **kwargs)


BAD_INPUTS = {
    # amount
    "negative count": (lambda P, net: P.l1_unstructured(net.fc1, "weight", amount=-2), "amount=-2"),
    "fraction above 1": (lambda P, net: P.random_unstructured(net.fc1, "weight", amount=1.25), "amount=1.25"),
    "amount of a wrong type": (lambda P, net: P.l1_unstructured(net.fc1, "weight", amount="half"), "'half'"),
    "count above the size": (lambda P, net: P.l1_unstructured(net.fc2, "weight", amount=25), "24"),
    "channels above the count": (lambda P, net: P.ln_structured(net.conv, "weight", amount=5, n=2, dim=0), "4"),
    # dim
    "dim past the last": (lambda P, net: P.random_structured(net.fc1, "weight", amount=1, dim=2), "dim=2"),
    "dim before the first": (lambda P, net: P.ln_structured(net.fc1, "weight", amount=1, n=1, dim=-3), "dim=-3"),
    "dim of a wrong type": (lambda P, net: P.random_structured(net.fc1, "weight", amount=1, dim="rows"), "'rows'"),
    "structured on a 1-D tensor": (lambda P, net: P.ln_structured(net.fc1, "bias", amount=1, n=2, dim=0), "(8,)"),
    # the target
    "a missing name": (lambda P, net: P.l1_unstructured(net.fc1, "wieght", amount=1), "'wieght'"),
    "a name that is not a string": (lambda P, net: P.l1_unstructured(net.fc1, 0, amount=1), "int 0"),
    "a module that is not a module": (lambda P, net: P.l1_unstructured("fc1", "weight", amount=1), "'fc1'"),
    "a buffer": (_buffer, "scale"),
    "an attribute that is not a tensor": (lambda P, net: P.l1_unstructured(net.fc1, "in_features", amount=1),
                                          "in_features"),
    "the _orig name taken": (_taken, "'weight_orig'"),
    # importance scores and masks
    "scores of another shape": (lambda P, net: P.l1_unstructured(net.fc1, "weight", amount=1,
                                                                importance_scores=torch.ones(8, 8)), "(8, 8)"),
    "structured scores of another shape": (lambda P, net: P.ln_structured(
        net.fc1, "weight", amount=1, n=2, dim=0, importance_scores=torch.ones(64)), "(64,)"),
    "prune() scores of another shape": (lambda P, net: P.L1Unstructured(1).prune(
        torch.ones(3, 4), importance_scores=torch.ones(4)), "(4,)"),
    "a custom mask of another shape": (lambda P, net: P.custom_from_mask(net.fc2, "weight", mask=torch.ones(8, 3)),
                                       "(8, 3)"),
    # remove
    "remove of an unpruned tensor": (lambda P, net: P.remove(net.fc1, "weight"), "weight"),
    "remove twice": (_remove_twice, "weight"),
    "remove on a non-module": (lambda P, net: P.remove("fc1", "weight"), "'fc1'"),
    "is_pruned of a non-module": (lambda P, net: P.is_pruned(None), "None"),
    "a method never applied, removed": (lambda P, net: P.L1Unstructured(0.5).remove(net.fc1), "apply"),
    "a method never applied, masking": (lambda P, net: P.L1Unstructured(0.5).apply_mask(net.fc1), "apply"),
    # containers
    "a method of another tensor": (lambda P, net: _container(P, _named(P.L1Unstructured(1), "bias")), "'bias'"),
    "a container of a non-method": (lambda P, net: _container(P, 3), "int"),
    "an empty container's mask": (lambda P, net: P.PruningContainer().compute_mask(torch.ones(2), torch.ones(2)),
                                  "add_pruning_method"),
    "an empty container's type": (lambda P, net: P.PruningContainer().PRUNING_TYPE, "add_pruning_method"),
    # global_unstructured
    "parameters not iterable": (lambda P, net: _global(P, 5, amount=1), "int"),
    "no parameters": (lambda P, net: _global(P, [], amount=1), "empty"),
    "no parameters, from a generator": (lambda P, net: _global(P, iter(()), amount=1), "empty"),
    "a pair of one": (lambda P, net: _global(P, [(net.fc1,)], amount=1), "parameters[0]"),
    "a pair of three": (lambda P, net: _global(P, [(net.fc2, "weight"), (net.fc1, "weight", 0)], amount=1),
                        "parameters[1]"),
    "a name instead of a pair": (lambda P, net: _global(P, ["weight"], amount=1), "'weight'"),
    "a number instead of a pair": (lambda P, net: _global(P, [7], amount=1), "parameters[0]"),
    "a pair without a module": (lambda P, net: _global(P, [("fc1", "weight")], amount=1), "'fc1'"),
    "a pair with a missing name": (lambda P, net: _global(P, [(net.fc1, "nope")], amount=1), "'nope'"),
    "scores not a dict": (lambda P, net: _global(P, [(net.fc1, "weight")], importance_scores=[1], amount=1), "list"),
    "global scores of another size": (lambda P, net: _global(P, [(net.fc1, "weight")], amount=1, importance_scores={
        (net.fc1, "weight"): torch.ones(8, 3)}), "(8, 3)"),
    "a structured method": (lambda P, net: P.global_unstructured([(net.fc1, "weight")], P.RandomStructured,
                                                                 amount=1), "RandomStructured"),
    "global count above the size": (lambda P, net: _global(P, [(net.fc2, "weight")], amount=25), "24"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_the_exception_type_torch_raises(name):
    """Ours is an instance of the very type PyTorch raises, an NcPruneError, and names what was wrong."""
    from torch.nn.utils import prune as torch_prune
    from nc_prune import NcPruneError
    from nc_prune.torch import prune as ours
    call, mentioned = BAD_INPUTS[name]
    theirs_net, our_net = Net(), Net()
    with pytest.raises(Exception) as theirs:
        call(torch_prune, theirs_net)
    with pytest.raises(type(theirs.value)) as our:
        call(ours, our_net)
    assert isinstance(our.value, NcPruneError), repr(our.value)
    assert mentioned in str(our.value), str(our.value)


def test_global_pairs_may_be_any_two_item_sequence_as_in_torch():
    run_twins(lambda P, net: P.global_unstructured([[net.fc1, "weight"], (net.fc2, "weight")], P.L1Unstructured,
                                                   amount=40), x=make_input())


# ---- zero-size layers: PyTorch's methods accept them, and so do ours --------------------------------------
class _Empty(nn.Module):
    """Layers with no weights at all (no inputs, or no outputs) beside a normal one."""

    def __init__(self) -> None:
        super().__init__()
        self.no_in, self.no_out, self.fc = nn.Linear(0, 4), nn.Linear(4, 0), nn.Linear(4, 3)


ZERO_INIT = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")


@ZERO_INIT
def test_zero_size_layers_prune_as_in_torch():
    def scenario(P, net):
        P.random_structured(net.no_out, "weight", amount=1, dim=1)  # 1 of its 4 (empty) input columns: a draw
        P.random_unstructured(net.no_out, "weight", amount=0.3)
        P.random_unstructured(net.no_out, "bias", amount=0)
        P.ln_structured(net.no_in, "weight", amount=2, n=2, dim=0)  # 2 of its 4 (empty) rows
        P.l1_unstructured(net.no_in, "weight", amount=0.5)
        P.random_structured(net.no_in, "weight", amount=0.5, dim=1)  # a container: no channel is left alive
        P.global_unstructured([(net.no_in, "weight"), (net.fc, "weight"), (net.no_out, "weight")],
                              P.L1Unstructured, amount=0.5)
    a, b = run_twins(scenario, factory=_Empty)
    assert b.no_in.weight_mask.shape == (4, 0) and b.no_out.weight_mask.shape == (0, 4)
    assert int((b.fc.weight_mask == 0).sum()) == 6


@ZERO_INIT
@pytest.mark.parametrize("call", [
    lambda P, net: P.l1_unstructured(net.no_in, "weight", amount=1),
    lambda P, net: P.ln_structured(net.no_out, "weight", amount=1, n=1, dim=0),
    lambda P, net: P.random_structured(net.no_in, "weight", amount=2, dim=1),
])
def test_a_count_on_a_zero_size_layer_fails_as_in_torch(call):
    from torch.nn.utils import prune as torch_prune
    from nc_prune.torch import prune as ours
    with pytest.raises(ValueError):
        call(torch_prune, _Empty())
    net = _Empty()
    with pytest.raises(ValueError, match="there are; pass at most 0"):
        call(ours, net)
    assert not ours.is_pruned(net)
