"""Registries: register, look up, override, unknown names, and user plug-ins used end to end."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune import (CRITERIA, PATTERNS, PRUNERS, SPARSITY_DECAYS, LayerUnits, Pattern, Registry, RegistryError,
                      WeightPruningConfig, compute_masks, get_pattern, register_criterion, register_pattern,
                      register_pruner, register_sparsity_decay, resolve_pruning_type, sparsity_at)
from nc_prune.core.pruner import BasicPruner, get_pruner_class


@pytest.fixture
def cleanup():
    """Unregister whatever a test registered, even when it fails."""
    added = []
    yield lambda registry, name: added.append((registry, name))
    for registry, name in added:
        if name in registry:
            registry.unregister(name)


def test_register_get_names_contains():
    reg = Registry("widget")
    assert len(reg) == 0 and reg.names() == []

    @reg.register("b")
    class B:
        pass

    reg.register("a")(len)
    assert reg.get("b") is B and reg.get("a") is len
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert "a" in reg and "c" not in reg
    assert repr(reg) == "Registry('widget', ['a', 'b'])"
    reg.unregister("a")
    assert reg.names() == ["b"]


def test_duplicate_is_an_error_unless_override():
    reg = Registry("widget")
    reg.register("x")(int)
    reg.register("x")(int)  # the same object again is harmless
    with pytest.raises(RegistryError, match=r"widget 'x' is already registered.*override=True"):
        reg.register("x")(float)
    assert reg.get("x") is int
    reg.register("x", override=True)(float)
    assert reg.get("x") is float


def test_unknown_lists_known_names_and_suggests():
    reg = Registry("widget")
    for n in ("magnitude", "gradient"):
        reg.register(n)(object)
    with pytest.raises(RegistryError) as info:
        reg.get("magnitud")
    msg = str(info.value)
    assert msg == "unknown widget 'magnitud'; known widgets: gradient, magnitude. Did you mean 'magnitude'?"
    assert isinstance(info.value, KeyError)
    with pytest.raises(RegistryError, match="unknown widget 'zzz'; known widgets: gradient, magnitude.$"):
        reg.get("zzz")
    with pytest.raises(RegistryError, match="unknown widget"):
        reg.unregister("zzz")
    with pytest.raises(RegistryError, match="non-empty string"):
        reg.register("")


def test_shipped_names():
    assert {"magnitude", "gradient", "snip", "snip_momentum"} <= set(CRITERIA.names())
    assert {"basic", "progressive", "pattern_lock"} <= set(PRUNERS.names())
    assert {"NxM", "N:M"} <= set(PATTERNS.names())
    assert {"exp", "linear", "cos", "cube"} <= set(SPARSITY_DECAYS.names())
    assert resolve_pruning_type("snip_momentum") == ("basic", "snip_momentum")
    assert resolve_pruning_type("magnitude_progressive") == ("progressive", "magnitude")
    assert resolve_pruning_type("pattern_lock") == ("pattern_lock", None)


def test_custom_criterion_selects_basic_pruner(cleanup):
    @register_criterion("square")
    class Square:
        needs_grad = False

        def __init__(self, config):
            self.config = config

        def score(self, weight, grad, previous):
            return weight * weight

    cleanup(CRITERIA, "square")
    assert resolve_pruning_type("square") == ("basic", "square")
    assert resolve_pruning_type("square_progressive") == ("progressive", "square")
    cfg = WeightPruningConfig(pruning_type="square_progressive", pattern="1x1", target_sparsity=0.5)
    assert get_pruner_class(cfg.groups[0]) is PRUNERS.get("progressive")
    pruner = BasicPruner(dict(cfg.groups[0], pruning_type="square"), {})
    w = np.array([[-3.0, 2.0]])
    assert np.array_equal(pruner.criterion.score(w, None, None), [[9.0, 4.0]])


def test_unregistered_criterion_is_gone(cleanup):
    register_criterion("tmp_crit")(object)
    cleanup(CRITERIA, "tmp_crit")
    assert resolve_pruning_type("tmp_crit") == ("basic", "tmp_crit")
    CRITERIA.unregister("tmp_crit")
    with pytest.raises(Exception, match="pruning_type 'tmp_crit' is not available"):
        resolve_pruning_type("tmp_crit")


class DiagonalUnits(LayerUnits):
    """Units are the diagonals i - j == d (mod cols) of a square 2-D weight: one per column offset."""

    def __init__(self, shape):
        self.shape = shape
        self.n = shape[0]
        self.n_units = self.n
        self.unit_size = self.n
        offsets = (np.arange(self.n)[None, :] - np.arange(self.n)[:, None]) % self.n
        self.offsets = offsets  # offsets[i, j] = (j - i) mod n

    def reduce(self, score, reduce_type, keep):
        return np.array([score[self.offsets == d].mean() for d in range(self.n)])

    def already_pruned(self, keep):
        return np.array([not keep[self.offsets == d].any() for d in range(self.n)])

    def expand(self, prune_units):
        return prune_units[self.offsets]

    def block_size(self):
        return [1, 1]


def test_custom_pattern_with_its_own_units(cleanup):
    @register_pattern("diagonal")
    class DiagonalPattern(Pattern):
        def units(self, name, shape):
            from nc_prune import PatternShapeError
            if len(shape) != 2 or shape[0] != shape[1]:
                raise PatternShapeError(f"layer {name!r} shape {shape}: diagonal needs a square weight")
            return DiagonalUnits(tuple(shape))

    cleanup(PATTERNS, "diagonal")
    cfg = WeightPruningConfig(pattern="diagonal", target_sparsity=0.5)
    pat = get_pattern(cfg.groups[0])
    assert isinstance(pat, DiagonalPattern)
    # score of diagonal d is d: the two lowest (d=0, 1) go
    n = 4
    scores = ((np.arange(n)[None, :] - np.arange(n)[:, None]) % n).astype(float)
    keep = compute_masks({"sq": scores}, "diagonal", 0.5)["sq"]
    assert np.array_equal(keep, scores >= 2)
    with pytest.warns(UserWarning, match=r"'rect'.*\(4, 2\).*left dense"):
        masks = compute_masks({"sq": scores, "rect": np.ones((4, 2))}, pat, 0.5)
    assert masks["rect"].all() and int((~masks["sq"]).sum()) == 8


def test_custom_sparsity_decay(cleanup):
    @register_sparsity_decay("step_half")
    def step_half(progress, init, target):
        return target / 2 if progress < 1 else target

    cleanup(SPARSITY_DECAYS, "step_half")
    assert [sparsity_at(s, 0, 3, 1, 0.8, "step_half") for s in range(5)] == [0.4, 0.4, 0.4, 0.8, 0.8]
    cfg = WeightPruningConfig(sparsity_decay_type="step_half", start_step=0, end_step=3, pruning_type="magnitude")
    assert cfg.groups[0]["sparsity_decay_type"] == "step_half"


def test_custom_pruner_by_decorator(cleanup):
    @register_pruner("half_target")
    class HalfTargetPruner(BasicPruner):
        def target_at(self, step):
            return super().target_at(step) / 2

    cleanup(PRUNERS, "half_target")
    assert resolve_pruning_type("half_target") == ("half_target", None)
    cfg = WeightPruningConfig(pruning_type="half_target", target_sparsity=0.5)
    assert get_pruner_class(cfg.groups[0]) is HalfTargetPruner
    assert HalfTargetPruner(cfg.groups[0], {}).target_at(0) == 0.25
    with pytest.raises(RegistryError, match="already registered"):
        register_pruner("half_target")(BasicPruner)
