"""What an adversarial pass found in the torch backend: lost work and silent wrong results, each pinned down."""

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from nc_prune import ConfigError, NoPrunableLayerError, PruningStateError, WeightPruningConfig
from nc_prune.torch import prepare_pruning, strip
from nc_prune.torch.pruning import live_pruning

from .conftest import mlp, train_steps, zeros

ROOT = Path(__file__).resolve().parents[2]
CFG = dict(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.75, start_step=0, end_step=8,
           pruning_frequency=2)


def hooks(model):
    return (sum(len(m._load_state_dict_post_hooks) + len(m._load_state_dict_pre_hooks) for m in model.modules()))


def plain_keys():
    return list(mlp().state_dict())


# ---- 1. a failed prepare_pruning leaves everything as it was -------------------------------------
@pytest.mark.parametrize("bad", ["foreign optimizer", "selects nothing", "other plan"])
def test_a_failed_second_prepare_leaves_the_running_pruning_in_charge(seeded, bad):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = prepare_pruning(model, WeightPruningConfig(**CFG), opt)
    train_steps(model, opt, 3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n_hooks = hooks(model)
    with pytest.raises((ConfigError, NoPrunableLayerError, PruningStateError)):
        if bad == "foreign optimizer":
            prepare_pruning(model, WeightPruningConfig(**CFG), torch.optim.SGD(mlp().parameters(), lr=0.1))
        elif bad == "selects nothing":
            prepare_pruning(model, WeightPruningConfig([{"op_names": ["nothing"]}], **CFG), opt)
        else:
            prepare_pruning(model, WeightPruningConfig(**dict(CFG, pattern="2:4", target_sparsity=0.5)), opt)
    assert live_pruning(model) is first
    assert hooks(model) == n_hooks
    assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    train_steps(model, opt, 6, seed=1)  # training goes on pruned: the schedule reaches its target
    assert zeros(model[0].weight) + zeros(model[2].weight) == 0.75 * (512 + 1024)


def test_a_failed_first_prepare_leaves_no_buffer_or_hook_so_plain_checkpoints_load_strictly(seeded):
    model = mlp()
    with pytest.raises(ConfigError, match="does not update the weights of 0, 2"):
        prepare_pruning(model, WeightPruningConfig(**CFG), torch.optim.SGD(mlp().parameters(), lr=0.1))
    assert list(model.state_dict()) == plain_keys()
    assert hooks(model) == 0 and live_pruning(model) is None
    model.load_state_dict(mlp().state_dict())  # strict


# ---- 2. prepared models are freed ----------------------------------------------------------------
def test_a_prepared_model_that_is_dropped_is_freed():
    refs = []
    for _ in range(3):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        prepare_pruning(model, WeightPruningConfig(**CFG), opt)
        refs.append(weakref.ref(model))
        del model, opt
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


# ---- 4. progressive pruners resume bit-exactly ---------------------------------------------------
RESUME = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from tests.torch.conftest import mlp, train_steps
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    cfg, first, last = WeightPruningConfig(**json.loads(sys.argv[1])), json.loads(sys.argv[2]), int(sys.argv[3])
    for path, step in first:
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        pruning = prepare_pruning(model, cfg, opt)
        ckpt = torch.load(path)
        model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"])
        assert pruning.global_step == step, (pruning.global_step, step)
        for s in range(step, last):
            train_steps(model, opt, 1, seed=s)
        torch.save(model.state_dict(), path + ".final")
""")


@pytest.mark.parametrize("ptype", ["snip_momentum_progressive", "magnitude_progressive"])
def test_progressive_pruning_resumes_bit_exactly_from_every_step_inside_an_interval(tmp_path, ptype):
    cfg = dict(pruning_type=ptype, pattern="4x1", target_sparsity=0.75, start_step=0, end_step=16,
               pruning_frequency=8, progressive_steps=4)
    last, positions = 20, [1, 2, 3, 5, 7, 10]  # stages begin at offsets 2, 4, 6 of the intervals [0, 8), [8, 16)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    prepare_pruning(model, WeightPruningConfig(**cfg), opt)
    saved = []
    for s in range(last):
        if s in positions:
            path = str(tmp_path / f"at{s}.pt")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
            saved.append((path, s))
        train_steps(model, opt, 1, seed=s)
    straight = model.state_dict()
    subprocess.run([sys.executable, "-c", RESUME.format(root=str(ROOT)), json.dumps(cfg), json.dumps(saved),
                    str(last)], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for path, step in saved:
        resumed = torch.load(path + ".final")
        assert resumed.keys() == straight.keys()
        for key in straight:
            assert torch.equal(resumed[key], straight[key]), (step, key)


# ---- 5. a checkpoint pruned under another plan ----------------------------------------------------
def _pruned_checkpoint():
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(**dict(CFG, pruning_type="magnitude")), opt)
    train_steps(model, opt, 10)
    return model.state_dict()


def test_a_checkpoint_of_another_plan_is_refused_before_anything_is_written(seeded):
    ckpt = _pruned_checkpoint()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(**dict(CFG, pruning_type="magnitude", pattern="2:4",
                                                      target_sparsity=0.5)), opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruningStateError) as info:
        model.load_state_dict(ckpt)
    msg = str(info.value)
    for part in ("layer '0': saved with pattern '4x1', target 0.75", "now pattern '2:4', target 0.5",
                 "layer '2'", "resume_from_pruned_checkpoint=True"):
        assert part in msg
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_resume_from_pruned_checkpoint_re_plans_from_the_checkpoints_zeros_and_says_so(seeded):
    ckpt = _pruned_checkpoint()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = dict(CFG, pruning_type="magnitude", pattern="2:4", target_sparsity=0.5, resume_from_pruned_checkpoint=True)
    pruning = prepare_pruning(model, WeightPruningConfig(**cfg), opt)
    with pytest.warns(UserWarning, match=r"re-planning 0, 2 from the checkpoint's zeros"):
        model.load_state_dict(ckpt)
    for name in ("0", "2"):
        assert torch.equal(pruning.masks[name], ckpt[f"{name}.weight"] != 0)
        assert torch.equal(model.get_submodule(name).weight, ckpt[f"{name}.weight"])
    assert pruning.global_step == 10


def test_the_same_plan_loads_even_after_its_schedule_changed(seeded):
    ckpt = _pruned_checkpoint()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(**dict(CFG, pruning_type="magnitude", end_step=20)), opt)
    model.load_state_dict(ckpt)
    assert torch.equal(model[0].weight_prune_mask, ckpt["0.weight_prune_mask"])


def test_preparing_again_under_another_plan_is_refused_unless_re_planning(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = prepare_pruning(model, WeightPruningConfig(**dict(CFG, pruning_type="magnitude")), opt)
    train_steps(model, opt, 10)
    with pytest.raises(PruningStateError, match=r"this model \(prepared before, not stripped\).*layer '0'.*'4x1'"):
        prepare_pruning(model, WeightPruningConfig(**dict(CFG, pattern="2:4", target_sparsity=0.5)), opt)
    assert live_pruning(model) is first
    with pytest.warns(UserWarning, match="already prepared"):
        second = prepare_pruning(model, WeightPruningConfig(**dict(CFG, pattern="2:4", target_sparsity=0.5,
                                                                   resume_from_pruned_checkpoint=True)), opt)
    assert torch.equal(second.masks["0"], model[0].weight != 0)


# ---- 6. replaced layers, shared weights, non-finite updates ----------------------------------------
def test_a_layer_replaced_after_prepare_is_an_error_at_the_next_step_not_a_dense_layer(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(**CFG), opt)
    train_steps(model, opt, 2)
    model[2] = nn.Linear(32, 32)
    with pytest.raises(PruningStateError, match=r"layer '2' changed after prepare_pruning \(module '2' on its path"):
        train_steps(model, opt, 1)
    model2 = mlp()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    prepare_pruning(model2, WeightPruningConfig(**CFG), opt2)
    model2[0].weight = nn.Parameter(torch.randn(32, 16))
    with pytest.raises(PruningStateError, match=r"layer '0' changed.*its weight Parameter was replaced"):
        train_steps(model2, opt2, 1)


class Tied(nn.Module):
    """Two Linear layers holding one Parameter, plus an untied one."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16, bias=False)
        self.b = nn.Linear(16, 16, bias=False)
        self.b.weight = self.a.weight
        self.c = nn.Linear(16, 16, bias=False)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.c(self.b(self.a(x))))


def test_a_shared_parameter_is_left_out_with_a_warning_or_pruned_once_when_named(seeded):
    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.warns(UserWarning, match=r"layer 'a' is left dense: its weight shared with b.weight"):
        pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1",
                                                             target_sparsity=0.5), opt)
    assert sorted(pruning.masks) == ["c"]
    assert "weight shared with b.weight" in str(pruning.report())
    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1", target_sparsity=0.5,
                                                         op_names=["a", "c"]), opt)
    train_steps(model, opt, 1)
    assert sorted(pruning.masks) == ["a", "c"]  # the shared weight is ranked once in global scope
    assert zeros(model.a.weight) + zeros(model.c.weight) == 256


def test_masked_weights_stay_exactly_zero_after_a_non_finite_update(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruning = prepare_pruning(model, WeightPruningConfig(**dict(CFG, pruning_type="magnitude", end_step=0)), opt)
    train_steps(model, opt, 1)
    pruned = ~pruning.masks["0"]
    for bad in (float("nan"), float("inf"), -float("inf")):
        opt.zero_grad()
        model[0].weight.grad = torch.full_like(model[0].weight, bad)
        opt.step()
        w = model[0].weight.detach()
        assert int((w[pruned] == 0).sum()) == int(pruned.sum()) and not torch.signbit(w[pruned]).any()
        assert torch.isnan(w[~pruned]).all() or torch.isinf(w[~pruned]).all()


def test_a_frozen_layer_without_gradient_is_told_by_name(seeded):
    model = mlp()
    model[2].weight.requires_grad_(False)
    pruning = prepare_pruning(model, WeightPruningConfig(**dict(CFG, op_names=["0", "2"])))
    pruning.on_train_begin()
    pruning.on_step_begin()
    model(torch.randn(4, 16)).sum().backward()
    with pytest.raises(PruningStateError, match=r"layer '2' had no gradient.*requires_grad=False"):
        pruning.on_before_optimizer_step()
