"""Checkpoint → resume in a fresh process → strip; copies; callbacks; one-shot; report."""

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.torch import prepare_pruning, sparsity_report, strip
from nc_prune.torch.state import ReapplyMask

from .conftest import mlp, train_steps, zeros

ROOT = Path(__file__).resolve().parents[2]
CFG = dict(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.75, start_step=2, end_step=12,
           pruning_frequency=2)

RUN = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {root!r})
    from tests.torch.conftest import mlp, train_steps
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruning = prepare_pruning(model, WeightPruningConfig(**json.loads({cfg!r})), opt)
    mode, path, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "resume":
        ckpt = torch.load(path)
        model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"])
        assert pruning.global_step == first, pruning.global_step
    for step in range(first, last):
        train_steps(model, opt, 1, seed=step)
    torch.save({{"model": model.state_dict(), "opt": opt.state_dict()}}, path)
""")


def _run(script, *args):
    subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_checkpoint_resumes_in_a_fresh_process_exactly(tmp_path):
    script = RUN.format(root=str(ROOT), cfg=json.dumps(CFG))
    straight, part = tmp_path / "straight.pt", tmp_path / "part.pt"
    _run(script, "fresh", straight, 0, 16)
    _run(script, "fresh", part, 0, 7)  # stop mid-schedule, between pruning steps
    mid = torch.load(part)["model"]
    assert int(mid["nc_prune_step"]) == 7
    assert mid["0.weight_prune_mask"].dtype == torch.bool
    _run(script, "resume", part, 7, 16)  # new process: model, optimizer, pruning rebuilt from scratch
    a, b = torch.load(straight)["model"], torch.load(part)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # masks, scores, step and weights all identical


def test_strip_leaves_a_plain_model_that_loads_into_an_unpruned_copy(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruning = prepare_pruning(model, WeightPruningConfig(**CFG), opt)
    train_steps(model, opt, 14)
    zeros_before = {n: zeros(getattr(model, n).weight) for n in ("0", "2")}
    assert strip(model) is model
    assert list(model.state_dict()) == list(mlp().state_dict())
    assert all(len(m._load_state_dict_post_hooks) == 0 for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    fresh = mlp()
    fresh.load_state_dict(model.state_dict())  # strict
    assert {n: zeros(getattr(fresh, n).weight) for n in ("0", "2")} == zeros_before
    assert zeros_before["0"] + zeros_before["2"] == 0.75 * (512 + 1024)
    train_steps(model, opt, 3)  # no hooks: nothing re-zeroes the weights any more
    assert zeros(model[0].weight) < zeros_before["0"]


def test_pruned_model_deepcopies_and_pickles(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(**CFG), opt)
    train_steps(model, opt, 8)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        x = torch.randn(3, 16)
        assert torch.equal(clone(x), model(x))
        assert torch.equal(clone[0].weight_prune_mask, model[0].weight_prune_mask)
        # the copy's load hook works on its own buffers
        clone.load_state_dict({k: torch.ones_like(v) if k.endswith(".weight") else v
                               for k, v in clone.state_dict().items()})
        assert zeros(clone[0].weight) == int((~clone[0].weight_prune_mask).sum())


def test_loading_dense_weights_into_a_pruned_model_rezeroes_them(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5,
                                               pruning_scope="local"), opt)
    train_steps(model, opt, 1)
    n_masked = int((~model[2].weight_prune_mask).sum())
    dense = {k: v for k, v in mlp().state_dict().items()}
    state = model.state_dict()
    state.update({k: v for k, v in dense.items() if k.endswith("weight")})
    model.load_state_dict(state)
    assert zeros(model[2].weight) == n_masked == 512


def test_manual_callbacks_match_optimizer_hooks():
    cfg = WeightPruningConfig(**CFG)
    runs = []
    for manual in (False, True):
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        pruning = prepare_pruning(model, cfg, None if manual else opt)
        if manual:
            pruning.on_train_begin()
        gen = torch.Generator().manual_seed(1)
        for _ in range(14):
            x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
            if manual:
                pruning.on_step_begin()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if manual:
                pruning.on_before_optimizer_step()
            opt.step()
            if manual:
                pruning.on_after_optimizer_step()
                pruning.on_step_end()
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_manual_callbacks_refused_when_the_optimizer_drives(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruning = prepare_pruning(model, WeightPruningConfig(**CFG), opt)
    with pytest.raises(RuntimeError, match="on_step_end.*driven by the optimizer"):
        pruning.on_step_end()


def test_one_shot_snip_with_a_dataloader(seeded):
    model = mlp()
    data = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(3)]
    cfg = WeightPruningConfig(pruning_type="snip", pattern="1x1", target_sparsity=0.6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruning = prepare_pruning(model, cfg, dataloader=data, loss_func=nn.functional.cross_entropy)
    assert zeros(model[0].weight) + zeros(model[2].weight) == int(0.6 * (512 + 1024))
    assert model[0].weight.grad is None  # one-shot leaves no gradients behind
    kept = model[0].weight_prune_mask
    assert torch.equal(model[0].weight[kept], before["0.weight"][kept])  # no weight update
    assert pruning.report().total_zeros == 921 and pruning.report().total_params == 1536 + 128


def test_one_shot_gradient_criterion_without_data_is_an_error(seeded):
    pruning = prepare_pruning(mlp(), WeightPruningConfig(pruning_type="snip_momentum"))
    with pytest.raises(ValueError, match="snip_momentum.*pass a dataloader"):
        pruning.prune_now()


def test_one_shot_magnitude_without_data(seeded):
    model = mlp()
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="2:4",
                                               target_sparsity=0.5)).prune_now()
    assert set((model[2].weight.reshape(-1, 4) == 0).sum(1).tolist()) == {2}


def test_report_as_table_and_data(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5,
                                                         pattern="4x1"), opt)
    train_steps(model, opt, 1)
    rep = pruning.report()
    data = rep.to_dict()
    assert [row["name"] for row in data["layers"]] == ["0", "2", "4"]
    assert [row["zeros"] for row in data["layers"]] == [zeros(model[0].weight), zeros(model[2].weight), 0]
    assert data["layers"][0]["pattern"] == "4x1" and data["layers"][2]["pattern"] == "-"
    assert data["total"] == {"params": 512 + 1024 + 128, "zeros": 768, "ratio": 768 / 1664, "unit_ratio": 0.5}
    assert data["layers"][2]["note"] == "classifier head"
    assert [row["pruned_units"] * 4 for row in data["layers"]] == [zeros(model[0].weight), zeros(model[2].weight), 0]
    table = str(rep)
    assert "4x1" in table and "total" in table and "46.15%" in table
    assert sparsity_report(model).to_dict() == data  # from the model alone, via the live pruning


def test_resume_from_pruned_checkpoint_masks_existing_zeros(seeded):
    model = mlp()
    with torch.no_grad():
        model[0].weight[:16] = 0  # 16 whole rows: 4 blocks of 4x1 per column
    zeros_before = zeros(model[0].weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.8, start_step=5,
                              end_step=9, resume_from_pruned_checkpoint=True, pruning_scope="local")
    prepare_pruning(model, cfg, opt)
    assert int((~model[0].weight_prune_mask).sum()) == zeros_before == 256
    train_steps(model, opt, 4)  # before start_step: only the adopted zeros are held
    assert zeros(model[0].weight) == 256 and zeros(model[2].weight) == 0
    train_steps(model, opt, 6)
    assert zeros(model[0].weight) == int(0.8 * 128) * 4
    assert torch.all(model[0].weight[:16] == 0)  # the adopted zeros stayed


def test_low_memory_usage_keeps_half_precision_scores(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", start_step=0, end_step=4, low_memory_usage=True,
                              target_sparsity=0.5)
    prepare_pruning(model, cfg, opt)
    assert model[0].weight_prune_score.dtype == torch.float16
    train_steps(model, opt, 6)
    assert zeros(model[0].weight) + zeros(model[2].weight) == int(0.5 * 384) * 4


def test_preparing_again_replaces_the_earlier_hooks_and_keeps_masks(seeded):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5), opt)
    train_steps(model, opt, 1)
    masks = {n: m.clone() for n, m in first.masks.items()}
    with pytest.warns(UserWarning, match="already prepared"):
        second = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5), opt)
    assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1
    assert all(torch.equal(second.masks[n], masks[n]) for n in masks)
    assert sum(isinstance(h, ReapplyMask) for m in model.modules() for h in m._load_state_dict_post_hooks.values()) == 2
    assert len(model._load_state_dict_post_hooks) == 1 and len(model._load_state_dict_pre_hooks) == 1  # plan check
