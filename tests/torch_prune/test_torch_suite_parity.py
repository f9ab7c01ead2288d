"""Every behaviour PyTorch's own pruning tests check (``test/nn/test_pruning.py``), checked on the drop-in.

The tests are ours: other modules, other tensors and other amounts, with the expected values worked out
by hand in the comments. Only the behaviours are PyTorch's: the private amount helpers, the
reparametrization, forward and backward, ``remove``, containers, each method's masks, global pruning,
rollback on failure, serialization, ``prune()`` and ``nn.LSTM``.
"""

from __future__ import annotations

import pickle
from unittest import mock

import pytest
import torch
from torch import nn

from nc_prune import NcPruneError
from nc_prune.torch import prune

MODULES = [lambda: nn.Linear(6, 3), lambda: nn.Conv3d(3, 2, 2)]
TENSORS = ["weight", "bias"]
EVERY_TENSOR = [(make, name) for make in MODULES for name in TENSORS]


def _set(module: nn.Module, name: str, values) -> None:
    with torch.no_grad():
        getattr(module, name).copy_(torch.as_tensor(values, dtype=torch.float32))


# ---- the private amount helpers ----------------------------------------------------------------------
@pytest.mark.parametrize("amount, error", [("a third", TypeError), (None, TypeError), ([0.5], TypeError),
                                           (1.01, ValueError), (7.5, ValueError), (-0.2, ValueError),
                                           (-3, ValueError)])
def test_amount_at_init_refuses_wrong_types_and_ranges(amount, error):
    with pytest.raises(error) as info:
        prune._validate_pruning_amount_init(amount=amount)
    assert isinstance(info.value, NcPruneError) and "amount" in str(info.value)


@pytest.mark.parametrize("amount", [0, 0.0, 1, 1.0, 0.62, 250_000])
def test_amount_at_init_accepts_counts_and_fractions(amount):
    assert prune._validate_pruning_amount_init(amount=amount) is None


def test_amount_against_the_tensor_size():
    with pytest.raises(ValueError, match="the 7 there are"):
        prune._validate_pruning_amount(amount=8, tensor_size=7)
    # a fraction always fits, even an empty tensor; a count fits up to the size
    for amount, size in [(0.6, 0), (7, 7), (0, 0), (3, 9), (1, 1)]:
        assert prune._validate_pruning_amount(amount=amount, tensor_size=size) is None


@pytest.mark.parametrize("amount, size, count", [
    (0, 9, 0), (9, 12, 9),
    (1, 12, 1),  # the int 1 is one unit ...
    (1.0, 12, 12),  # ... the float 1.0 all of them
    (0.3, 13, 4),  # 3.9 rounds to 4
    (0.5, 5, 2), (0.7, 5, 4),  # Python's round: 2.5 -> 2 and 3.5 -> 4 (ties to even)
])
def test_amount_becomes_a_count(amount, size, count):
    assert prune._compute_nparams_toprune(amount=amount, tensor_size=size) == count


# ---- the reparametrization -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", EVERY_TENSOR)
def test_orig_mask_and_pruned_tensor_have_the_original_shape_and_values(make, name):
    torch.manual_seed(3)
    m = make()
    original = getattr(m, name)
    before = original.detach().clone()
    prune.random_unstructured(m, name=name, amount=0.25)
    orig, mask, pruned = getattr(m, name + "_orig"), getattr(m, name + "_mask"), getattr(m, name)
    assert orig.shape == mask.shape == pruned.shape == before.shape
    assert orig is original and torch.equal(orig, before)
    assert torch.equal(pruned, orig * mask.to(dtype=orig.dtype))
    assert int((mask == 0).sum()) == round(0.25 * before.numel())


def _output_and_grads(m: nn.Linear, x: torch.Tensor, weight_name: str):
    m.zero_grad(set_to_none=True)
    y = m(x)
    y.sum().backward()
    return y.detach(), getattr(m, weight_name).grad.clone(), m.bias.grad.clone()


def _assert_mask_of_ones_changes_nothing(apply) -> None:
    """Pruning with a mask of ones: same output, same gradients (now on weight_orig), stable forwards."""
    torch.manual_seed(5)
    m, x = nn.Linear(4, 3), torch.randn(2, 4)
    y0, gw0, gb0 = _output_and_grads(m, x, "weight")
    apply(m)
    y1, gw1, gb1 = _output_and_grads(m, x, "weight_orig")
    assert torch.equal(y0, y1) and torch.equal(gw0, gw1) and torch.equal(gb0, gb1)
    assert torch.equal(m(x), m(x))


def test_identity_changes_neither_forward_nor_backward():
    _assert_mask_of_ones_changes_nothing(lambda m: prune.identity(m, name="weight"))


def test_a_method_whose_mask_is_all_ones_changes_nothing_whatever_the_amount():
    def apply(m):
        with mock.patch.object(prune.RandomUnstructured, "compute_mask", return_value=torch.ones(3, 4)):
            prune.random_unstructured(m, name="weight", amount=0.75)
    _assert_mask_of_ones_changes_nothing(apply)


def _pruned_by(mask: torch.Tensor) -> nn.Linear:
    """A Linear(4, 3) pruned through random_unstructured, whose mask is replaced by ``mask``."""
    torch.manual_seed(11)
    m = nn.Linear(4, 3)
    with mock.patch.object(prune.RandomUnstructured, "compute_mask", return_value=mask):
        prune.random_unstructured(m, name="weight", amount=0.5)
    return m


def test_pruned_entries_get_no_gradient_and_a_gradient_step_leaves_them():
    mask = torch.ones(3, 4)
    mask[0, 2] = mask[2, 1] = 0
    m = _pruned_by(mask)
    m(torch.ones(1, 4)).sum().backward()
    assert torch.equal(m.weight_orig.grad, mask)  # d(sum of outputs)/dw is 1 wherever the weight is kept
    assert torch.equal(m.bias.grad, torch.ones(3))
    before = m.weight_orig.detach().clone()
    with torch.no_grad():
        for p in m.parameters():
            p.sub_(0.5 * p.grad)
    assert m.weight_orig[0, 2] == before[0, 2] and m.weight_orig[2, 1] == before[2, 1]
    assert torch.equal(m.weight_orig[mask == 1], before[mask == 1] - 0.5)


def test_forward_uses_only_the_kept_weights():
    mask = torch.zeros(3, 4)
    mask[0, 1] = mask[2, 3] = 1
    m = _pruned_by(mask)
    y = m(torch.ones(1, 4))[0]
    assert torch.equal(y, torch.stack([m.weight_orig[0, 1] + m.bias[0], m.bias[1],
                                       m.weight_orig[2, 3] + m.bias[2]]).detach())


def test_remove_keeps_the_forward():
    mask = torch.ones(3, 4)
    mask[1, 0] = mask[1, 3] = 0
    m = _pruned_by(mask)
    x = torch.randn(5, 4)
    pruned_out = m(x)
    prune.remove(m, "weight")
    assert torch.equal(m(x), pruned_out) and isinstance(m.weight, nn.Parameter)


def test_the_parameter_object_survives_prune_and_remove():
    m = nn.Linear(4, 3, bias=False)
    first = next(iter(m.parameters()))
    prune.random_unstructured(m, name="weight", amount=0.5)
    assert next(iter(m.parameters())) is first
    prune.remove(m, "weight")
    assert next(iter(m.parameters())) is first


@pytest.mark.parametrize("make, name", EVERY_TENSOR)
def test_a_pruned_module_pickles(make, name):
    m = make()
    prune.random_unstructured(m, name=name, amount=0.5)
    back = pickle.loads(pickle.dumps(m))
    assert isinstance(back, type(m)) and torch.equal(getattr(back, name), getattr(m, name))


# ---- containers ------------------------------------------------------------------------------------------
def test_pruning_twice_makes_a_container_that_keeps_earlier_zeros():
    torch.manual_seed(2)
    m = nn.Conv2d(3, 4, 2)
    prune.l1_unstructured(m, name="weight", amount=0.2)
    first = m.weight_mask.clone()
    prune.ln_structured(m, name="weight", amount=0.5, n=1, dim=0)
    hooks = list(m._forward_pre_hooks.values())
    assert len(hooks) == 1 and isinstance(hooks[0], prune.PruningContainer)
    container = hooks[0]
    assert container._tensor_name == "weight" and len(container) == 2
    assert [type(p) for p in container] == [prune.L1Unstructured, prune.LnStructured]
    assert bool((m.weight_mask[first == 0] == 0).all())
    assert int((m.weight_mask.sum(dim=(1, 2, 3)) == 0).sum()) == 2  # half of the 4 filters
    prune.ln_structured(m, name="weight", amount=1, n=float("inf"), dim=1)
    container = next(iter(m._forward_pre_hooks.values()))
    assert container._tensor_name == "weight" and len(container) == 3


def _named(method, name="t"):
    method._tensor_name = name
    return method


def test_container_rules():
    container = _named(prune.PruningContainer())
    assert len(container) == 0
    container.add_pruning_method(_named(prune.L1Unstructured(amount=1)))
    assert len(container) == 1
    with pytest.raises(ValueError, match="'other'"):
        container.add_pruning_method(_named(prune.L1Unstructured(amount=1), "other"))
    for not_a_method in (7, "l1"):
        with pytest.raises(TypeError):
            container.add_pruning_method(not_a_method)
    assert len(container) == 1


def test_container_computes_each_new_mask_only_where_the_last_one_left_something():
    t = torch.tensor([[4., -1., 6., 2.], [3., 8., -5., 7.]])
    old = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]])
    container = _named(prune.PruningContainer())
    # unstructured: the 2 smallest |t| among the kept ones (-1 and 2) go
    container.add_pruning_method(_named(prune.L1Unstructured(amount=2)))
    assert torch.equal(container.compute_mask(t, old), torch.tensor([[1., 0, 0, 0], [1, 1, 1, 0]]))
    # structured over rows: L2 norms 7.55 and 12.1, so row 0 goes
    container.add_pruning_method(_named(prune.LnStructured(amount=1, n=2, dim=0)))
    assert torch.equal(container.compute_mask(t, old), torch.tensor([[0., 0, 0, 0], [1, 1, 1, 0]]))
    # structured over columns: all 4 are still alive; column 0 has the smallest L2 norm (5, against 8.1, 7.8, 7.3)
    container.add_pruning_method(_named(prune.LnStructured(amount=1, n=2, dim=1)))
    assert torch.equal(container.compute_mask(t, old), torch.tensor([[0., 1, 0, 1], [0, 1, 1, 0]]))


# ---- the masks of each method ----------------------------------------------------------------------------
def test_l1_unstructured_prunes_the_smallest_magnitudes_and_again_on_a_second_call():
    m = nn.Linear(3, 2)
    _set(m, "weight", [[5., -0.5, 2.], [-3., 1., -4.]])
    prune.l1_unstructured(m, "weight", amount=2)  # -0.5 and 1
    assert m.weight.tolist() == [[5., 0., 2.], [-3., 0., -4.]]
    prune.l1_unstructured(m, "weight", amount=2)  # next: 2 and -3
    assert m.weight.tolist() == [[5., 0., 0.], [0., 0., -4.]]


def test_l1_unstructured_ranks_by_importance_scores_when_given():
    m = nn.Linear(3, 2)
    _set(m, "weight", [[5., -0.5, 2.], [-3., 1., -4.]])
    scores = torch.tensor([[0.1, 9., -6.], [2., -0.3, 7.]])
    prune.l1_unstructured(m, "weight", amount=2, importance_scores=scores)  # |0.1| and |-0.3|
    assert m.weight.tolist() == [[0., -0.5, 2.], [-3., 0., -4.]]
    prune.l1_unstructured(m, "weight", amount=2, importance_scores=scores)  # then |2| and |-6|
    assert m.weight.tolist() == [[0., -0.5, 0.], [0., 0., -4.]]


def test_equal_magnitudes_prune_exactly_the_count_not_every_weight_at_the_threshold():
    t = 3 * torch.randint(-1, 2, (9, 8), generator=torch.Generator().manual_seed(0))  # only -3, 0 and 3
    mask = prune.L1Unstructured(amount=0.4).compute_mask(t, default_mask=torch.ones_like(t))
    assert int((mask == 0).sum()) == prune._compute_nparams_toprune(0.4, t.nelement()) == 29


def test_random_structured_prunes_whole_slices_along_dim():
    t = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(1))
    mask = prune.RandomStructured(amount=0.4, dim=2).compute_mask(t, default_mask=torch.ones_like(t))
    pruned_per_slice = (mask == 0).sum(dim=(0, 1))
    assert sorted(pruned_per_slice.tolist()) == [0, 0, 0, 6, 6]  # 2 of 5 slices, each of 3 * 2 entries


def _conv() -> nn.Conv2d:
    m = nn.Conv2d(3, 1, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[[[2., -1.], [0.5, 1.]], [[0.2, 0.1], [-0.3, 0.2]], [[-2., 3.], [1., -4.]]]]))
    return m


def test_ln_structured_by_hand_along_two_dims():
    m = _conv()
    prune.ln_structured(m, "weight", amount=1, n=2, dim=1)  # input channel norms 2.5, 0.42, 5.5
    expected = torch.ones(1, 3, 2, 2)
    expected[:, 1] = 0
    assert torch.equal(m.weight_mask, expected)
    prune.ln_structured(m, "weight", amount=1, n=1, dim=-1)  # kernel columns of what is left: L1 5.5 and 9
    expected[..., 0] = 0
    assert torch.equal(m.weight_mask, expected)


def test_ln_structured_by_importance_scores():
    m = _conv()
    scores = torch.tensor([[[[9., 1.], [9., 1.]], [[4., 0.5], [4., 0.5]], [[-6., -2.], [-6., -2.]]]])
    prune.ln_structured(m, "weight", amount=1, n=2, dim=1, importance_scores=scores)  # channel 1 scores lowest
    expected = torch.ones(1, 3, 2, 2)
    expected[:, 1] = 0
    assert torch.equal(m.weight_mask, expected)
    prune.ln_structured(m, "weight", amount=1, n=1, dim=-1, importance_scores=scores)  # column 1 scores lowest
    expected[..., 1] = 0
    assert torch.equal(m.weight_mask, expected)


def test_custom_from_mask_combines_with_the_earlier_mask():
    new = torch.tensor([[1, 0, 1], [0, 1, 1]])
    old = torch.tensor([[1, 1, 0], [0, 1, 1]])
    mask = prune.CustomFromMask(mask=new).compute_mask(torch.zeros(2, 3), old)
    assert torch.equal(mask, torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=mask.dtype))


# ---- remove ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", EVERY_TENSOR)
def test_remove_makes_pruning_permanent_under_the_original_name(make, name):
    m = make()
    prune.random_unstructured(m, name, amount=0.5)
    params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
    assert name + "_orig" in params and name + "_mask" in buffers and name not in params
    pruned = getattr(m, name).detach().clone()
    prune.remove(m, name)
    params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
    assert name in params and name + "_orig" not in params and name + "_mask" not in buffers
    assert torch.equal(getattr(m, name), pruned)


@pytest.mark.parametrize("make, name", EVERY_TENSOR)
def test_remove_on_an_unpruned_tensor_is_a_value_error(make, name):
    m = make()
    assert not prune.is_pruned(m)
    with pytest.raises(ValueError, match=name):
        prune.remove(m, name)


# ---- global pruning --------------------------------------------------------------------------------------
def _two_layers():
    a, b = nn.Linear(3, 2), nn.Linear(2, 2)
    _set(a, "weight", [[0.7, -2., 0.05], [1.5, -0.4, 3.]])
    _set(b, "weight", [[-0.1, 2.5], [0.3, -1.2]])
    return a, b


def test_global_l1_prunes_the_smallest_across_parameters():
    a, b = _two_layers()
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=3)
    # the 3 smallest magnitudes of both layers together: 0.05 in the first, -0.1 and 0.3 in the second
    assert torch.equal(a.weight, torch.tensor([[0.7, -2., 0.], [1.5, -0.4, 3.]]))
    assert torch.equal(b.weight, torch.tensor([[0., 2.5], [0., -1.2]]))


def test_global_l1_ranks_by_importance_scores_when_given():
    a, b = _two_layers()
    scores = {(a, "weight"): torch.tensor([[5., 0.2, 4.], [6., 7., -0.6]]),
              (b, "weight"): torch.tensor([[3., -0.1], [8., 9.]])}
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured,
                              importance_scores=scores, amount=3)  # |-0.1|, |0.2| and |-0.6|
    assert a.weight_mask.tolist() == [[1, 0, 1], [1, 1, 0]] and b.weight_mask.tolist() == [[1, 0], [1, 1]]


# ---- rollback and serialization --------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", EVERY_TENSOR)
def test_a_failing_mask_leaves_the_module_unpruned(make, name):
    m = make()
    with mock.patch.object(prune.L1Unstructured, "compute_mask", side_effect=RuntimeError("no mask today")):
        with pytest.raises(RuntimeError, match="no mask today"):
            prune.l1_unstructured(m, name=name, amount=0.5)
    assert name in dict(m.named_parameters()) and not prune.is_pruned(m)
    assert name + "_mask" not in dict(m.named_buffers()) and name + "_orig" not in dict(m.named_parameters())


def _model():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))


def test_a_saved_pruned_model_loads_pruned(tmp_path):
    model = _model()
    assert "0.weight" in model.state_dict() and "0.weight_orig" not in model.state_dict()
    prune.l1_unstructured(module=model[0], name="weight", amount=0.6)
    keys = set(model.state_dict())
    assert {"0.weight_orig", "0.weight_mask"} <= keys and "0.weight" not in keys and hasattr(model[0], "weight")
    torch.save(model, tmp_path / "model.pt")
    back = torch.load(tmp_path / "model.pt", weights_only=False)
    assert set(back.state_dict()) == keys
    assert torch.equal(back[0].weight, model[0].weight) and int((back[0].weight == 0).sum()) == 18


def test_a_state_dict_saved_after_remove_loads_into_a_plain_model(tmp_path):
    model = _model()
    prune.l1_unstructured(module=model[0], name="weight", amount=0.6)
    pruned = model[0].weight.detach().clone()
    prune.remove(module=model[0], name="weight")
    assert set(model.state_dict()) == set(_model().state_dict())
    torch.save(model.state_dict(), tmp_path / "state.pt")
    fresh = _model()
    fresh.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert set(fresh.state_dict()) == set(model.state_dict()) and torch.equal(fresh[0].weight, pruned)


# ---- prune() ----------------------------------------------------------------------------------------------
T = torch.tensor([[6., 2., 9., 4.], [1., 7., 3., 8.]])
OLD = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]])


def test_prune_returns_the_tensor_times_the_new_mask():
    # among the kept entries the two smallest are 1 and 2
    assert torch.equal(prune.L1Unstructured(amount=2).prune(T, OLD), T * torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]))


def test_prune_ranks_by_importance_scores_and_scores_equal_to_the_tensor_change_nothing():
    scores = torch.tensor([[0.5, 6., 1., 0.1], [9., 0.2, 5., 7.]])
    by_scores = prune.L1Unstructured(amount=2).prune(T, OLD, importance_scores=scores)  # 0.1 and 0.2 go
    assert torch.equal(by_scores, T * torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]))
    p = prune.L1Unstructured(amount=2)
    assert torch.equal(p.prune(T, OLD, importance_scores=T), p.prune(T, OLD))


# ---- modules that keep copies of their weights ------------------------------------------------------------
def test_lstm_flat_weights_follow_prune_and_remove():
    lstm = nn.LSTM(6, 5)
    prune.l1_unstructured(lstm, "weight_hh_l0", 0.5)
    assert sum(isinstance(w, nn.Parameter) for w in lstm._flat_weights) == 3
    prune.remove(lstm, "weight_hh_l0")
    assert sum(isinstance(w, nn.Parameter) for w in lstm._flat_weights) == 4
    params = dict(lstm.named_parameters())
    assert isinstance(lstm._parameters["weight_hh_l0"], nn.Parameter) and "weight_hh_l0_orig" not in lstm._parameters
    assert params["weight_hh_l0"] is lstm._parameters["weight_hh_l0"] and "weight_hh_l0_orig" not in params
    assert int((lstm.weight_hh_l0 == 0).sum()) == 50
