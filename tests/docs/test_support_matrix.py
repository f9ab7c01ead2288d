"""The README's "What works" table is true: every cell it marks is run in that framework and checked.

A conv + linear model is pruned during training to 50 % (global scope, 4 pruning steps); the test checks
the exact number of pruned units (channels of different lengths: the weights, to one unit) and that the
zeros form whole units of the pattern. ``pattern_lock`` must keep exactly the zeros the model had. A cell marked "—" must be refused by the config.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from nc_prune import WeightPruningConfig, get_pattern
from nc_prune.core.errors import ConfigError
from nc_prune.core.selection import count_for_ratio

from .samples import ROOT

FRAMEWORKS = {"PT": "torch", "K": "keras"}
TARGET = 0.5
STEPS = dict(start_step=0, end_step=6, pruning_frequency=2)


def readme_matrix():
    """``[(pruning_type, pattern, frameworks)]`` from the README table; frameworks empty for "—"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [l for l in text.splitlines() if l.startswith("| `pruning_type` \\ `pattern`")]
    assert len(lines) == 1, "the README's support table is missing or duplicated"
    start = text.splitlines().index(lines[0])
    rows = text.splitlines()[start:]
    patterns = [re.search(r"`([^`]+)`", c).group(1) for c in rows[0].strip("|").split("|")[1:]]
    cells = []
    for row in rows[2:]:
        if not row.startswith("|"):
            break
        first, *marks = [c.strip() for c in row.strip("|").split("|")]
        for ptype in re.findall(r"`([^`]+)`", first):
            for pattern, mark in zip(patterns, marks):
                cells.append((ptype, pattern, tuple(FRAMEWORKS[m] for m in re.findall(r"\b(PT|K)\b", mark))))
    return cells


CELLS = readme_matrix()


def test_table_lists_every_built_in_pruning_type_and_pattern():
    types = {c[0] for c in CELLS}
    assert {"magnitude", "gradient", "snip", "snip_momentum", "magnitude_progressive",
            "snip_momentum_progressive", "pattern_lock"} <= types
    assert {c[1] for c in CELLS} == {"4x1", "1x1", "1xchannel", "channelx1", "2:4"}


def _torch_run(config, prezero):
    import torch
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 16), nn.ReLU(),
                          nn.Linear(16, 2))
    layers = {"0": model[0], "3": model[3]}
    if prezero is not None:
        with torch.no_grad():
            for name, layer in layers.items():
                layer.weight.mul_(torch.from_numpy(prezero[name]))
    from nc_prune.torch import prepare_pruning
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prepare_pruning(model, config, opt)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 4, 4, 4, generator=gen)),
                                    torch.randint(0, 2, (8,), generator=gen)).backward()
        opt.step()
    return {name: layer.weight.detach().numpy().copy() for name, layer in layers.items()}  # canonical already


def _keras_run(config, prezero):
    keras = pytest.importorskip("keras")
    from nc_prune.keras import find_prunable_weights, prepare_pruning
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 4, 4)), L.Conv2D(8, 3, padding="same", name="0"), L.Flatten(),
                              L.Dense(16, name="3"), L.Dense(2, name="head")])
    weights = {w.name: w for w in find_prunable_weights(model) if w.name != "head"}
    if prezero is not None:
        for name, w in weights.items():
            keep = w.layout.from_canonical(prezero[name], w.native_shape)
            w.variable.assign(keras.ops.convert_to_numpy(w.variable) * keep)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = prepare_pruning(model, config)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(80, 4, 4, 4)).astype("float32"), rng.integers(0, 2, 80), batch_size=8, epochs=1,
              verbose=0, callbacks=[cb])
    return {name: w.layout.to_canonical(keras.ops.convert_to_numpy(w.variable)) for name, w in weights.items()}


RUN = {"torch": _torch_run, "keras": _keras_run}


def _prezero(shapes):
    """A deterministic pattern of zeros for pattern_lock: every third weight."""
    return {n: (np.arange(int(np.prod(s))).reshape(s) % 3 != 0).astype("float32") for n, s in shapes.items()}


SHAPES = {"0": (8, 4, 3, 3), "3": (16, 128)}


@pytest.mark.parametrize("ptype,pattern,frameworks", CELLS, ids=[f"{c[0]}-{c[1]}" for c in CELLS])
def test_cell(ptype, pattern, frameworks):
    if not frameworks:
        with pytest.raises(ConfigError):
            WeightPruningConfig(pruning_type=ptype, pattern=pattern)
        return
    target = TARGET if ":" not in pattern else 0.5
    config = WeightPruningConfig(pruning_type=ptype, pattern=pattern, target_sparsity=target, **STEPS)
    prezero = _prezero(SHAPES) if ptype == "pattern_lock" else None
    for fw in frameworks:
        if fw == "keras":
            pytest.importorskip("nc_prune.keras")
        weights = RUN[fw](config, prezero)
        if prezero is not None:  # exactly the zeros it had, kept through training
            for name, w in weights.items():
                assert np.array_equal(w != 0, prezero[name] != 0), (fw, name)
            continue
        pat = get_pattern(config.groups[0])
        pruned_units = total_units = pruned_weights = 0
        sizes = set()
        for name, w in weights.items():
            units = pat.units(name, w.shape)
            keep = w != 0
            units.reduce(np.abs(w), "mean", keep)  # N:M remembers which weights of a group are lowest
            gone = units.already_pruned(keep)
            # the zeros are exactly whole units: rebuilding the mask from the pruned units gives it back
            assert np.array_equal(~units.expand(gone), keep), (fw, name)
            pruned_units += int(gone.sum())
            total_units += units.n_units
            pruned_weights += int((~keep).sum())
            sizes.add(units.unit_size)
        if len(sizes) > 1:  # channels of different lengths: a fraction of the weights, short by < one unit
            budget = count_for_ratio(sum(int(np.prod(s)) for s in SHAPES.values()), target)
            assert 0 <= budget - pruned_weights < max(sizes), (fw, ptype, pattern)
            continue
        scale = pat.units("x", SHAPES["3"]).ratio_scale
        assert pruned_units == count_for_ratio(total_units, min(1.0, target * scale)), (fw, ptype, pattern)


@pytest.fixture(autouse=True, scope="module")
def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def readme_one_shot_matrix():
    """``[(pruning_type, pattern, owl, frameworks)]`` from the README's one-shot table."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("| one-shot `pruning_type`"))
    patterns = [re.search(r"`([^`]+)`", c).group(1) for c in lines[start].strip("|").split("|")[1:]]
    cells, types = [], []
    for row in lines[start + 2:]:
        if not row.startswith("|"):
            break
        first, *marks = [c.strip() for c in row.strip("|").split("|")]
        owl = "owl" in first
        names = types if owl else re.findall(r"^`([a-z_]+)`", first)
        types += [] if owl else names
        for ptype in names:
            for pattern, mark in zip(patterns, marks):
                cells.append((ptype, pattern, owl, tuple(FRAMEWORKS[m] for m in re.findall(r"\b(PT|K)\b", mark))))
    return cells


ONE_SHOT = readme_one_shot_matrix()


@pytest.mark.parametrize("ptype,pattern,owl,frameworks", ONE_SHOT,
                         ids=[f"{c[0]}-{c[1]}{'-owl' if c[2] else ''}" for c in ONE_SHOT])
def test_one_shot_cell(ptype, pattern, owl, frameworks):
    params = {"sparsity_allocation": "owl"} if owl else {}
    target = 0.5 if ":" in pattern else 0.6
    if not frameworks:
        with pytest.raises(ConfigError):
            WeightPruningConfig(pruning_type=ptype, pattern=pattern, target_sparsity=target, parameters=params)
        return
    assert frameworks == ("torch",)
    import torch
    from torch import nn
    from nc_prune.torch import prepare_pruning
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    calib = [torch.randn(16, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type=ptype, pattern=pattern, target_sparsity=target,
                                                         parameters=params), dataloader=calib)
    layers = pruning.calibration.layers
    assert sorted(layers) == ["0", "2"]
    if owl:
        assert round(sum(info["sparsity"] for info in layers.values()) / 2, 9) == target
    for name, info in layers.items():
        w = model.get_submodule(name).weight
        if ":" in pattern:
            n, m = map(int, pattern.split(":"))
            assert ((w == 0).reshape(w.shape[0], -1, m).sum(-1) == n).all()
        elif ptype == "sparse_gpt":
            # the default mask_selection="block": each column block (here the whole layer, <= 128 columns)
            # competes as one, so the layer's count is exact while single rows vary
            assert w.shape[1] <= 128 and int((w == 0).sum()) == count_for_ratio(w.numel(), info["sparsity"])
            assert len(set((w == 0).sum(1).tolist())) > 1
        else:
            assert (w == 0).sum(1).tolist() == [count_for_ratio(w.shape[1], info["sparsity"])] * w.shape[0]
