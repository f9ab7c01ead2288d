"""Attach an implementation to a model, train with a schedule, finalize."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nc_prune import NoPrunableLayerError, PatternShapeError, PruningStateError
from nc_prune.core.errors import ConfigTypeError
from nc_prune.torch.prune_impl import (BlockStructured, ChannelStructured, MagnitudePruneImpl, NMStructured,
                                       PolynomialDecaySchedule, PruneImplBase, Unstructured, attach_prune_impl,
                                       finalize_prune_impl, prune_impls, update_model_sparsity)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def _model():
    torch.manual_seed(0)
    return CNN()


def test_attach_masks_every_matching_layer_and_keeps_the_parameter_objects():
    model = _model()
    originals = {n: m.weight for n, m in model.named_modules() if hasattr(m, "weight")}
    impls = attach_prune_impl(model, MagnitudePruneImpl, target_sparsity=0.5, pruning_scheme=NMStructured(2, 4))
    assert sorted(impls) == ["conv", "fc", "head"]
    for name, impl in impls.items():
        layer = model.get_submodule(name)
        assert layer.parametrizations.weight.original is originals[name]
        assert layer.parametrizations.weight[0] is impl
        assert int((layer.weight == 0).sum()) == layer.weight.numel() // 2
    assert [n for n, _ in prune_impls(model)] == ["conv.weight", "fc.weight", "head.weight"]


def test_op_names_types_and_exclusions_select_layers():
    model = _model()
    picked = attach_prune_impl(model, "default", op_names=["fc", "head"], excluded_op_names=["head"],
                               target_sparsity=0.25, pruning_scheme=Unstructured())
    assert list(picked) == ["fc"]
    only_conv = attach_prune_impl(_model(), "magnitude", module_types=(nn.Conv2d,), target_sparsity=0.25,
                                  pruning_scheme=ChannelStructured(axis=0))
    assert list(only_conv) == ["conv"]


def test_training_with_a_schedule_keeps_pruned_weights_at_zero_and_reaches_the_target():
    model = _model()
    attach_prune_impl(model, MagnitudePruneImpl.with_args(
        target_sparsity=0.75, pruning_scheme=BlockStructured((4, 1)),
        schedule=PolynomialDecaySchedule(total_iters=4, power=1.0)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(6, 4, 4, 4), torch.randint(0, 4, (6,))
    history = []
    for step in range(6):
        sparsities = update_model_sparsity(model, step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        fc = model.fc.weight
        history.append((round(sparsities["fc.weight"], 4), int((fc == 0).sum())))
        for layer in (model.conv, model.fc, model.head):
            mask = layer.parametrizations.weight[0].mask
            assert int((layer.weight[~mask] != 0).sum()) == 0
    n = model.fc.weight.numel()
    assert history == [(0.0, 0), (0.25, n // 4), (0.5, n // 2), (0.75, 3 * n // 4), (0.75, 3 * n // 4),
                       (0.75, 3 * n // 4)]


def test_finalize_bakes_the_zeros_into_the_same_parameters():
    model = _model()
    originals = {n: m.weight for n, m in model.named_modules() if hasattr(m, "weight")}
    attach_prune_impl(model, "default", target_sparsity=0.5, pruning_scheme=Unstructured())
    x = torch.randn(2, 4, 4, 4)
    before = model(x)
    assert finalize_prune_impl(model) == ["conv.weight", "fc.weight", "head.weight"]
    for name, param in originals.items():
        layer = model.get_submodule(name)
        assert not parametrize.is_parametrized(layer) and type(layer) in (nn.Conv2d, nn.Linear)
        assert layer.weight is param and int((param == 0).sum()) == param.numel() // 2
    assert torch.allclose(model(x), before)
    assert finalize_prune_impl(model) == []
    assert sorted(model.state_dict()) == sorted(CNN().state_dict())  # parametrize re-registers weight last


def test_attached_models_deepcopy():
    model = _model()
    attach_prune_impl(model, "default", target_sparsity=0.5, pruning_scheme=Unstructured())
    clone = copy.deepcopy(model)
    x = torch.randn(2, 4, 4, 4)
    assert torch.equal(clone(x), model(x))
    assert clone.fc.parametrizations.weight[0] is not model.fc.parametrizations.weight[0]


def test_attach_errors_leave_the_model_untouched():
    model = _model()
    with pytest.raises(ConfigTypeError, match="constructor"):
        attach_prune_impl(model, MagnitudePruneImpl(0.5, Unstructured()))
    with pytest.raises(NoPrunableLayerError, match="matched no layer"):
        attach_prune_impl(model, "default", op_names=["decoder"], target_sparsity=0.5, pruning_scheme=Unstructured())
    with pytest.raises(PatternShapeError, match="'conv'"):  # 8 output channels are not a multiple of 3
        attach_prune_impl(model, "default", target_sparsity=0.5, pruning_scheme=BlockStructured((3, 1)))
    with pytest.raises(ConfigTypeError, match="list"):
        attach_prune_impl(model, "default", op_names="fc", target_sparsity=0.5, pruning_scheme=Unstructured())
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    attach_prune_impl(model, "default", target_sparsity=0.5, pruning_scheme=Unstructured())
    with pytest.raises(PruningStateError, match="already"):
        attach_prune_impl(model, "default", target_sparsity=0.5, pruning_scheme=Unstructured())
    with pytest.raises(PruningStateError, match="no schedule"):
        update_model_sparsity(model, 1)


def test_finalize_refuses_foreign_parametrizations_on_the_same_tensor():
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    layer = nn.Linear(4, 4)
    parametrize.register_parametrization(layer, "weight", Double())
    parametrize.register_parametrization(layer, "weight", MagnitudePruneImpl(0.5, Unstructured()))
    with pytest.raises(Exception, match="other parametrizations"):
        finalize_prune_impl(layer)
    assert isinstance(layer.parametrizations.weight[1], PruneImplBase)
