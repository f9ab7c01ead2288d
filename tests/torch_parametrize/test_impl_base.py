"""Every member of PruneImplBase, a custom registered implementation, and the registries."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nc_prune import ConfigError, PruningStateError, RegistryError
from nc_prune.core.errors import ConfigTypeError
from nc_prune.torch.prune_impl import (BlockStructured, ConstantSparsitySchedule, MagnitudePruneImpl,
                                       NMStructured, PartialConstructor, PolynomialDecaySchedule, PruneImplBase,
                                       PruningScheme, SparsityScheduleBase, Unstructured)


def _weight(shape=(4, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.tensor(shape).prod())
    return ((torch.randperm(n, generator=g) + 1).float() * (torch.rand(n, generator=g) - 0.5).sign()).reshape(shape)


class CountingImpl(MagnitudePruneImpl):
    """Magnitude pruning that counts how often its mask is computed."""

    calls = 0

    @staticmethod
    def compute_mask(weight, sparsity, pruning_scheme):
        CountingImpl.calls += 1
        return MagnitudePruneImpl.compute_mask(weight, sparsity, pruning_scheme)


@pytest.fixture
def counting():
    CountingImpl.calls = 0
    return CountingImpl


def test_init_keeps_the_arguments_and_starts_at_the_target():
    impl = MagnitudePruneImpl(0.75, Unstructured())
    assert impl.target_sparsity == 0.75 and impl.pruning_scheme == Unstructured()
    assert impl.sparsity == 0.75 and impl.schedule is None and impl.mask is None
    assert PruneImplBase.schedule is None


def test_init_with_a_schedule_starts_at_its_step_zero_value():
    impl = MagnitudePruneImpl(0.8, Unstructured(), schedule=PolynomialDecaySchedule(total_iters=10,
                                                                                   initial_sparsity=0.2))
    assert impl.sparsity == 0.2
    assert MagnitudePruneImpl(0.8, Unstructured(), schedule=ConstantSparsitySchedule(begin_step=3)).sparsity == 0.0


@pytest.mark.parametrize("args, kwargs, error", [
    ((1.5, Unstructured()), {}, ConfigError),
    (("half", Unstructured()), {}, ConfigTypeError),
    ((0.5, "unstructured"), {}, ConfigTypeError),
    ((0.75, NMStructured(2, 4)), {}, ConfigError),  # 2:4 reaches at most 0.5
    ((0.5, Unstructured()), {"schedul": None}, ConfigError),
    ((0.5, Unstructured()), {"schedule": 3}, ConfigTypeError),
])
def test_init_rejects_bad_arguments(args, kwargs, error):
    with pytest.raises(error) as info:
        MagnitudePruneImpl(*args, **kwargs)
    assert len(str(info.value)) > 20


def test_the_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        PruneImplBase(0.5, Unstructured())


def test_compute_mask_is_a_pure_static_function():
    w = _weight()
    mask = MagnitudePruneImpl.compute_mask(w, 0.25, Unstructured())
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert torch.equal(~mask, w.abs() <= w.abs().flatten().sort().values[7])
    assert torch.equal(w, _weight())  # not mutated


def test_forward_masks_the_weight_and_passes_gradients_to_the_kept_entries():
    w = _weight().requires_grad_()
    impl = MagnitudePruneImpl(0.5, Unstructured())
    out = impl(w)
    assert torch.equal(out, w.detach() * impl.mask) and int((out == 0).sum()) == 16
    out.sum().backward()
    assert torch.equal(w.grad, impl.mask.float())


def test_forward_recomputes_the_mask_only_when_stale(counting):
    impl = counting(0.5, Unstructured(), schedule=PolynomialDecaySchedule(total_iters=3, power=1.0))
    w = _weight()
    impl(w)
    impl(w * 2)
    assert counting.calls == 1 and impl.sparsity == 0.0
    impl.update_sparsity(0)  # same value: not stale
    impl(w)
    assert counting.calls == 1
    impl.update_sparsity(1)
    assert counting.calls == 1  # lazy: nothing until the next forward
    impl(w)
    assert counting.calls == 2 and int((~impl.mask).sum()) == 8
    impl(_weight((8, 8)))  # another shape
    assert counting.calls == 3 and impl.mask.shape == (8, 8)


def test_update_sparsity_needs_a_schedule():
    impl = MagnitudePruneImpl(0.5, Unstructured())
    with pytest.raises(RuntimeError, match="schedule"):
        impl.update_sparsity(3)
    with pytest.raises(PruningStateError):
        impl.update_sparsity(3)
    impl.schedule = ConstantSparsitySchedule(begin_step=2)
    impl.update_sparsity(1)
    assert impl.sparsity == 0.0
    impl.update_sparsity(2)
    assert impl.sparsity == 0.5
    with pytest.raises(ConfigError):
        impl.update_sparsity(-1)


def test_sparsity_follows_the_schedule_step_by_step():
    impl = MagnitudePruneImpl(0.6, Unstructured(), schedule=PolynomialDecaySchedule(total_iters=4, power=1.0))
    w = _weight((5, 4))
    seen = []
    for step in range(6):
        impl.update_sparsity(step)
        impl(w)
        seen.append((round(impl.sparsity, 6), int((~impl.mask).sum())))
    assert seen == [(0.0, 0), (0.2, 4), (0.4, 8), (0.6, 12), (0.6, 12), (0.6, 12)]


def test_with_args_builds_partial_constructors():
    partial = MagnitudePruneImpl.with_args(target_sparsity=0.5)
    assert isinstance(partial, PartialConstructor) and "target_sparsity=0.5" in repr(partial)
    impl = partial(pruning_scheme=Unstructured())
    assert isinstance(impl, MagnitudePruneImpl) and impl.target_sparsity == 0.5
    deeper = partial.with_args(pruning_scheme=BlockStructured((2, 1)), target_sparsity=0.25)
    assert deeper().target_sparsity == 0.25 and deeper().pruning_scheme == BlockStructured((2, 1))
    assert partial(target_sparsity=0.1, pruning_scheme=Unstructured()).target_sparsity == 0.1
    assert partial(pruning_scheme=Unstructured()) is not partial(pruning_scheme=Unstructured())


def test_with_args_rejects_unknown_names_of_an_explicit_signature():
    class Fixed(MagnitudePruneImpl):
        def __init__(self, target_sparsity: float, pruning_scheme: PruningScheme) -> None:
            super().__init__(target_sparsity, pruning_scheme)

    with pytest.raises(ConfigTypeError, match="sparsity_target"):
        Fixed.with_args(sparsity_target=0.5)


# ---- registries ---------------------------------------------------------------------------------------
def test_built_in_registry_entries():
    assert {"default", "magnitude"} <= set(PruneImplBase.list_registry_keys())
    assert PruneImplBase.get_class("default") is MagnitudePruneImpl
    keys, values = PruneImplBase.list_registry_keys(), PruneImplBase.list_registry_values()
    assert [PruneImplBase.get_class(k) for k in keys] == values and all(isinstance(k, str) for k in keys)
    assert PruningScheme.list_registry_keys() == ["block", "channel", "n:m", "unstructured"]
    assert SparsityScheduleBase.list_registry_keys() == ["constant", "polynomial_decay"]
    assert PruningScheme.get_class("n:m") is NMStructured
    assert MagnitudePruneImpl.get_class("default") is MagnitudePruneImpl  # any family member reads the registry


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        PruneImplBase.get_class("magnitud")
    assert isinstance(info.value, RegistryError)
    assert "default" in str(info.value) and "magnitude" in str(info.value)


def test_unregister_removes_a_key():
    @PruneImplBase.register("test_temporary")
    class Temporary(MagnitudePruneImpl):
        pass

    PruneImplBase.unregister("test_temporary")
    assert "test_temporary" not in PruneImplBase.list_registry_keys()
    with pytest.raises(RegistryError):
        PruneImplBase.unregister("test_temporary")


def test_register_rules():
    with pytest.raises(RegistryError, match="already registered"):
        PruneImplBase.register("default")(CountingImpl)
    with pytest.raises(ConfigTypeError):
        PruneImplBase.register("not_an_impl")(nn.Linear)
    with pytest.raises(RegistryError):
        PruneImplBase.register(MagnitudePruneImpl)
    with pytest.raises(ConfigTypeError):
        PruningScheme.register("impl_as_scheme")(MagnitudePruneImpl)


@pytest.fixture
def top_rows():
    """A custom implementation registered by key: prunes whole rows with the smallest row index."""

    @PruneImplBase.register("test_first_rows")
    class FirstRows(PruneImplBase):
        @staticmethod
        def compute_mask(weight, sparsity, pruning_scheme):
            rows = int(weight.shape[0] * sparsity)
            mask = torch.ones_like(weight, dtype=torch.bool)
            mask[:rows] = False
            return mask

    yield FirstRows
    PruneImplBase.unregister("test_first_rows")


def test_a_custom_registered_implementation_as_a_parametrization(top_rows):
    cls = PruneImplBase.get_class("test_first_rows")
    assert cls is top_rows and "test_first_rows" in PruneImplBase.list_registry_keys()
    assert top_rows in PruneImplBase.list_registry_values()
    layer = nn.Linear(3, 4)
    original = layer.weight
    parametrize.register_parametrization(layer, "weight", cls(0.5, Unstructured()))
    assert layer.parametrizations.weight.original is original
    assert layer.weight[:2].abs().sum() == 0 and bool((layer.weight[2:] == original[2:]).all())
    impl = layer.parametrizations.weight[0]
    impl.schedule = ConstantSparsitySchedule(begin_step=5)
    impl.update_sparsity(0)
    assert layer.weight.abs().sum() > 0 and bool((layer.weight == original).all())


def test_compute_mask_of_the_wrong_shape_is_reported():
    class Broken(MagnitudePruneImpl):
        @staticmethod
        def compute_mask(weight, sparsity, pruning_scheme):
            return torch.ones(3)

    with pytest.raises(ConfigError, match="shape"):
        Broken(0.5, Unstructured())(_weight())


def test_state_dict_round_trip_restores_mask_and_sparsity_without_recomputing(counting):
    def build():
        layer = nn.Linear(8, 4)
        parametrize.register_parametrization(layer, "weight", counting(
            0.5, Unstructured(), schedule=PolynomialDecaySchedule(total_iters=3, power=1.0)))
        return layer

    src = build()
    src.parametrizations.weight[0].update_sparsity(1)
    src.weight  # computes the 0.25 mask
    state = src.state_dict()
    assert "parametrizations.weight.0.mask" in state and "parametrizations.weight.0._extra_state" in state
    dst = build()
    calls = counting.calls
    dst.load_state_dict(state)
    impl = dst.parametrizations.weight[0]
    assert impl.sparsity == 0.25 and torch.equal(impl.mask, src.parametrizations.weight[0].mask)
    assert torch.equal(dst.weight, src.weight) and counting.calls == calls
    fresh = counting(0.5, Unstructured())
    prefix = "parametrizations.weight.0."
    fresh.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    assert torch.equal(fresh.mask, impl.mask) and fresh.sparsity == 0.25
