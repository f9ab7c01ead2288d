"""Local-scope masks on torch tensors (issue 15): the same masks as the numpy core, ties included, and no
numpy conversion on the torch path."""

import numpy as np
import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.core.errors import ConfigError
from nc_prune.core.patterns.base import get_pattern
from nc_prune.core.patterns.local import local_masks
from nc_prune.core.xp import NumpyOps
import nc_prune.torch._adapter as adapter
import nc_prune.torch.pruner as torch_pruner
from nc_prune.torch import prepare_pruning
from nc_prune.torch._xp import TorchOps


def _scores(shape, kind, gen):
    s = torch.rand(shape, generator=gen)
    if kind == "ties":  # few distinct values: block and group scores tie a lot
        s = (s * 4).floor() / 4
    elif kind == "signed":  # negative, -0.0, +-inf (a custom criterion may give them)
        s = torch.randn(shape, generator=gen)
        flat = s.view(-1)
        flat[::7] = -0.0
        flat[3::11] = 0.0
        flat[5::97] = -float("inf")
        flat[6::101] = float("inf")
    elif kind == "float64":
        s = s.double()
    return s


def _pre(shape, pattern, scores, gen):
    """Earlier masks: a local 30 % of the pattern (so whole units are pruned) plus a few stray zeros."""
    keep = torch.from_numpy(get_pattern({"pattern": pattern, "pruning_scope": "local"}).get_masks(
        {"l": torch.rand(shape, generator=gen).numpy()}, 0.3)["l"])
    return keep


PATTERNS = ["1x1", "4x1", "2x2", "1x4", "8x1", "2x4", "1x2", "2:4", "1:4", "4:8", "3:6"]


@pytest.mark.filterwarnings("ignore:.*is left dense")
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("reduce_type", ["mean", "sum", "max"])
@pytest.mark.parametrize("kind", ["rand", "ties", "signed", "float64"])
def test_local_masks_equal_the_core(pattern, reduce_type, kind):
    gen = torch.Generator().manual_seed(hash((pattern, reduce_type, kind)) % 1000)
    shapes = {"fc": (48, 96), "conv": (16, 24, 3, 3), "odd": (40, 30)}
    scores = {n: _scores(s, kind, gen) for n, s in shapes.items()}
    scores["t"] = _scores((96, 48), kind, gen).t()  # a transposed view (HF Conv1D's canonical layout)
    cfg = {"pattern": pattern, "pruning_scope": "local", "criterion_reduce_type": reduce_type,
           "min_sparsity_ratio_per_op": 0.0, "max_sparsity_ratio_per_op": 0.9}
    for target in (0.0, 0.35, 0.5, 0.8, 1.0):
        for with_pre in (False, True):
            pat = get_pattern(cfg)
            pre = None
            if with_pre:
                pre = {n: _pre(tuple(s.shape), pattern, s, gen) if pat.check_shape(n, tuple(s.shape)) is None
                       else torch.rand(s.shape, generator=gen) > 0.1 for n, s in scores.items()}
            for names in (list(scores), [n for n in scores if n != "t"]):
                sc = {n: scores[n] for n in names}
                pr = None if pre is None else {n: pre[n] for n in names}
                try:
                    ref = pat.get_masks({n: s.numpy() for n, s in sc.items()}, target,
                                        None if pr is None else {n: m.numpy() for n, m in pr.items()})
                except ConfigError as exc:  # +inf and -inf in one block: NaN, refused alike, naming the layer
                    try:  # or None: the layers go to the reference, which raises
                        assert local_masks(get_pattern(cfg), sc, target, pr, None, TorchOps) is None
                    except ConfigError as mine:
                        assert str(mine) == str(exc)
                    continue
                dev = local_masks(get_pattern(cfg), sc, target, pr, None, TorchOps)
                if dev is None:  # sums over 2-D or 8-long blocks of a transposed view: numpy picks its own order there
                    assert "t" in sc and reduce_type != "max" and pattern in ("2x2", "2x4", "8x1"), pattern
                    continue
                ref_np = local_masks(get_pattern(cfg), {n: s.numpy() for n, s in sc.items()}, target,
                                     None if pr is None else {n: m.numpy() for n, m in pr.items()}, None, NumpyOps)
                for n in sc:
                    assert dev[n].dtype == torch.bool and dev[n].device == sc[n].device
                    assert torch.equal(dev[n], torch.from_numpy(np.ascontiguousarray(ref[n]))), (n, target, with_pre)
                    assert np.array_equal(ref_np[n], ref[n]), (n, target, with_pre)


def test_ties_go_to_the_lower_index():
    scores = {"l": torch.ones(8, 4)}  # 8 4x1 blocks (2 block rows of 4), all tied: the first 4 go
    dev = local_masks(get_pattern({"pattern": "4x1", "pruning_scope": "local"}), scores, 0.5, None, None, TorchOps)
    assert torch.equal(dev["l"], torch.arange(8)[:, None].expand(8, 4) >= 4)
    scores["l"][0, 3] = 0.5  # the block at (block row 0, column 3) is now the lowest; then ties in order
    dev = local_masks(get_pattern({"pattern": "4x1", "pruning_scope": "local"}), scores, 0.25, None, None, TorchOps)
    want = torch.ones(8, 4, dtype=torch.bool)
    want[:4, 3] = False
    want[:4, 0] = False
    assert torch.equal(dev["l"], want)


def test_what_stays_on_the_reference_path():
    scores = {"l": torch.rand(16, 32)}
    for cfg in ({"pattern": "4x1", "pruning_scope": "global"},
                {"pattern": "1xchannel", "pruning_scope": "local"},  # a row sum: numpy's pairwise order
                {"pattern": "channelx1", "pruning_scope": "local"}):
        assert local_masks(get_pattern(cfg), scores, 0.5, None, None, TorchOps) is None, cfg
    assert local_masks(get_pattern({"pattern": "1xchannel", "pruning_scope": "local", "criterion_reduce_type": "max"}),
                       scores, 0.5, None, None, TorchOps) is not None


def test_nan_scores_name_the_layer():
    scores = {"fc.weight": torch.rand(8, 8)}
    scores["fc.weight"][2, 3] = float("nan")
    with pytest.raises(ConfigError, match="'fc.weight' contain NaN"):
        local_masks(get_pattern({"pattern": "4x1", "pruning_scope": "local"}), scores, 0.5, None, None, TorchOps)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))))


def _train(ptype, pattern, low_memory, device_path, steps=9):
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = WeightPruningConfig(pruning_type=ptype, pattern=pattern, target_sparsity=0.5 if ":" in pattern else 0.7,
                              pruning_scope="local", start_step=1, end_step=7, pruning_frequency=2, low_memory_usage=low_memory)
    pruning = prepare_pruning(model, cfg, opt)
    gen = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(8, 4, 4, 4, generator=gen)
        nn.functional.cross_entropy(model(x), torch.randint(0, 4, (8,), generator=gen)).backward()
        opt.step()
        history.append({n: m.clone() for n, m in pruning.masks.items()})
    return history, pruning


def _forbid_numpy(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("numpy conversion on the torch path")
    monkeypatch.setattr(adapter, "tensor_to_numpy", refuse)
    monkeypatch.setattr(torch_pruner, "tensor_to_numpy", refuse)
    monkeypatch.setattr(torch.Tensor, "numpy", refuse)
    monkeypatch.setattr(torch.Tensor, "__array__", refuse)


@pytest.mark.parametrize("ptype,pattern,low_memory", [("snip_momentum", "4x1", False), ("snip_momentum", "2:4", True),
                                                      ("magnitude", "1x1", False), ("snip", "2x2", False)])
def test_no_numpy_conversion_on_the_torch_path(monkeypatch, ptype, pattern, low_memory):
    with monkeypatch.context() as m:  # the reference: the numpy core
        m.setattr(torch_pruner, "local_masks", lambda *a, **k: None)
        ref, _ = _train(ptype, pattern, low_memory, False)
    with monkeypatch.context() as m:
        _forbid_numpy(m)
        dev, pruning = _train(ptype, pattern, low_memory, True)
        ratio = pruning.pruners[0].current_sparsity_ratio
    assert ratio > 0.4
    for step, (a, b) in enumerate(zip(dev, ref)):
        assert a.keys() == b.keys()
        for n in a:
            assert torch.equal(a[n], b[n]), (step, n)
