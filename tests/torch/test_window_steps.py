"""Steps inside the pruning window (issue 15): in-place score updates give the bits of the old expressions."""

import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.core.criteria import SnipMomentumCriterion, uses_update
from nc_prune.core.registry import CRITERIA, register_criterion
import nc_prune.torch.pruner as torch_pruner
from nc_prune.torch import prepare_pruning


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 4))


def _scores(pruning):
    return {n: p._buffer(n, "score").clone() for p in pruning.pruners for n in p.modules}


def _run(ptype, low_memory, steps, scale, in_place, monkeypatch, piece=None):
    """Scores after ``steps`` optimizer steps inside the window (no mask step), by the in-place or the old path."""
    with monkeypatch.context() as m:
        if not in_place:
            m.setattr(torch_pruner, "uses_update", lambda criterion: False)
        if piece is not None:
            m.setattr(torch_pruner, "_SCORE_PIECE", piece)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.01 / scale)  # the same training whatever the loss scale
        cfg = WeightPruningConfig(pruning_type=ptype, pattern="4x1", target_sparsity=0.5, start_step=0,
                                  end_step=10**6, pruning_frequency=10**6, low_memory_usage=low_memory)
        pruning = prepare_pruning(model, cfg, opt)
        gen = torch.Generator().manual_seed(1)
        history = []
        for _ in range(steps):
            opt.zero_grad()
            x = torch.randn(8, 16, generator=gen)
            (model(x).square().sum() * scale).backward()
            opt.step()
            history.append(_scores(pruning))
        assert all(bool(s.isfinite().all()) for s in history[-1].values()) or low_memory
        return history


@pytest.mark.parametrize("ptype", ["gradient", "snip", "snip_momentum"])
@pytest.mark.parametrize("low_memory", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e9])  # 1e9: scores beyond float16's range, clamped to its largest value
def test_in_place_scores_equal_the_old_expressions(monkeypatch, ptype, low_memory, scale):
    new = _run(ptype, low_memory, 6, scale, True, monkeypatch, piece=100)  # pieces that cut through rows
    whole = _run(ptype, low_memory, 6, scale, True, monkeypatch)
    old = _run(ptype, low_memory, 6, scale, False, monkeypatch)
    for step, (a, b, c) in enumerate(zip(new, whole, old)):
        for name in a:
            assert a[name].dtype == (torch.float16 if low_memory else torch.float32)
            assert torch.equal(a[name], c[name]), (step, name)
            assert torch.equal(b[name], c[name]), (step, name)
    if scale > 1 and low_memory:
        assert any(bool((s == torch.finfo(torch.float16).max).any()) for s in old[-1].values())
        assert not any(bool(s.isinf().any()) for s in new[-1].values())


def test_score_buffer_is_updated_in_place(monkeypatch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, start_step=0,
                              end_step=100, pruning_frequency=100)
    pruning = prepare_pruning(model, cfg, opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 16)).sum().backward()
        opt.step()
    p = pruning.pruners[0]
    for name in p.modules:
        assert p.scores[name] is p._buffer(name, "score")


def test_custom_criteria_keep_their_score(cleanup_criteria):
    calls = []

    @register_criterion("half_snip_momentum")
    class HalfSnip(SnipMomentumCriterion):  # overrides score() only: must not run the parent's update()
        def score(self, weight, grad, previous):
            calls.append(1)
            new = abs(weight * grad) * 0.5
            return new if previous is None else previous * self.alpha + new

    @register_criterion("duck_grad")
    class Duck:  # not a Criterion subclass at all
        needs_grad = True

        def __init__(self, config):
            pass

        def score(self, weight, grad, previous):
            calls.append(2)
            return grad * grad

    assert not uses_update(HalfSnip()) and not uses_update(Duck(None))
    assert uses_update(SnipMomentumCriterion())
    for ptype, tag in (("half_snip_momentum", 1), ("duck_grad", 2)):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        cfg = WeightPruningConfig(pruning_type=ptype, pattern="4x1", target_sparsity=0.5, start_step=0,
                                  end_step=100, pruning_frequency=100)
        pruning = prepare_pruning(model, cfg, opt)
        opt.zero_grad()
        x = torch.randn(8, 16)
        model(x).sum().backward()
        grads = {n: t.weight.grad.clone() for n, t in pruning.pruners[0].modules.items()}
        weights = {n: t.weight.detach().clone() for n, t in pruning.pruners[0].modules.items()}
        opt.step()
        assert tag in calls
        for n, buf in _scores(pruning).items():
            want = abs(weights[n] * grads[n]) * 0.5 if tag == 1 else grads[n] * grads[n]
            assert torch.equal(buf, want), n


@pytest.fixture
def cleanup_criteria():
    yield
    for name in ("half_snip_momentum", "duck_grad"):
        if name in CRITERIA.names():
            CRITERIA.unregister(name)
