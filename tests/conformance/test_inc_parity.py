"""Masks from the same scores: nc_prune against Intel Neural Compressor 2.6 (the last INC with a pruner).

INC 2.6 needs ``numpy<2`` and ``setuptools<81``, so it lives in its own virtual environment, made by
``bash scripts/inc_env.sh`` (``benchmarks/.envs/inc``, or the python named by ``NC_PRUNE_INC_PYTHON``).
Without it every test here is skipped with the reason.

How INC is driven (read from ``neural_compressor/compression/pruner/patterns`` of the 2.6 wheel): its
config is processed by INC's own ``process_config``, the pattern object comes from INC's ``get_pattern``
with real ``torch.nn`` modules of the layers' shapes, NxM element scores are reduced with the pattern's
``reduce_score`` (as INC's criteria do), N:M scores are passed element-wise (as INC's criteria do), and
``get_masks(scores, target, pre_masks)`` is called with all-ones pre-masks. Scores are float64 random
numbers without ties, so block means cannot swap order between torch and numpy summation.

What matches exactly (number of pruned blocks and every mask element):

* ``NxM`` blocks (``4x1``, ``2x2``, ``1x1``, ``8x4``), Linear and conv layers, global and local scope,
  with ``criterion_reduce_type`` ``mean``, ``sum`` and ``max``.
  INC's conv 2-D view is ``(O, kh*kw*I)`` with the input channel fastest, the same as nc_prune's.
* ``1xchannel`` and ``channelx1`` on Linear layers, with ``global_target="units"`` in global scope (INC
  counts channels; nc_prune's default counts weights, which differs where rows differ in length —
  ``test_weighted_channel_target_differs_from_inc_where_rows_differ`` shows it).
* ``N:M`` (``2:4``, ``1:4``, ``2:8``), Linear and conv, global and local, targets at and below N/M.
  INC scores a group with ``reduce(scores * pruned_in_group)`` over all M entries; nc_prune reduces
  the N lowest only. For non-negative scores (every criterion's) the two rank groups the same
  (``mean`` differs by the constant factor N/M; ``sum`` and ``max`` are equal); all three compared.
* ``max_sparsity_ratio_per_op`` with ``min_sparsity_ratio_per_op=0``: a layer that the global order
  would prune past the bound is cut to ``floor(units * max)`` of its lowest units and the rest of the
  budget goes, in score order, to the other layers.

Where INC differs, and why (each is asserted below, so a change on either side is noticed):

* Channel patterns on conv weights. INC takes the block size from the raw 4-D shape: ``1xchannel``
  becomes ``[1, I]`` and ``channelx1`` ``[O, 1]`` on the ``(O, kh*kw*I)`` view, so its "channel"
  blocks are the I input weights of one filter at *one kernel position*, and one column (one input
  channel at one kernel position). nc_prune prunes whole filters and whole input channels. INC's
  masks equal nc_prune's for the explicit block sizes ``1x{I}`` and ``{O}x1``.
* Counts: INC prunes ``int(units * target)`` of the binary product, so 0.57 of 100 units is 56;
  nc_prune's ``count_for_ratio`` rounds the product to 6 decimals first and prunes 57.
* ``min_sparsity_ratio_per_op > 0``: INC never lifts a layer up to the minimum. Its ``adjust_ratio``
  only holds back budget from the layers it visits for layers below the minimum, so such a layer can
  end below the bound (here 76 of 256 blocks for a 0.3 minimum) and the other layers' blocks are no
  longer the lowest-scored ones (the trimming follows the visiting order). The total is the same.
  nc_prune guarantees ``ceil(units * min)`` per layer (77 here) and takes the rest in global order.
* INC's own config leaks: ``WeightPruningConfig``'s default ``pruning_configs=[{}]`` is one dict
  shared by every instance, so a second config built from keyword arguments alone silently keeps the
  first one's pattern and target. The driver passes every key in an explicit group to avoid it.
* ``pre_masks``: INC ignores earlier masks when it ranks (it relies on zeroed weights scoring low);
  nc_prune keeps every pruned unit pruned. Not compared here (all-ones pre-masks).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nc_prune import compute_masks
from nc_prune.core.selection import count_for_ratio

ROOT = Path(__file__).resolve().parents[2]
INC_PYTHON = Path(os.environ.get("NC_PRUNE_INC_PYTHON", ROOT / "benchmarks" / ".envs" / "inc" / "bin" / "python"))

# Runs inside the INC environment: python driver.py scores.npz cases.json out.npz
DRIVER = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
import logging
logging.disable(logging.WARNING)
import numpy as np, torch
from neural_compressor import WeightPruningConfig
from neural_compressor.compression.pruner.utils import process_config
from neural_compressor.compression.pruner.patterns import get_pattern

scores = dict(np.load(sys.argv[1]))
cases = json.load(open(sys.argv[2]))

def module(shape):
    if len(shape) == 2:
        return torch.nn.Linear(shape[1], shape[0], bias=False)
    return torch.nn.Conv2d(shape[1], shape[0], tuple(shape[2:]), bias=False)

out = {}
for case in cases:
    # Every key goes into an explicit group: INC's default pruning_configs=[{}] is one shared dict that
    # keeps the first config's values and leaks them into every later WeightPruningConfig.
    group = dict(pattern=case["pattern"], target_sparsity=case["target"], pruning_type="magnitude",
                 pruning_scope=case["scope"], max_sparsity_ratio_per_op=case["max"],
                 min_sparsity_ratio_per_op=case["min"], criterion_reduce_type=case["reduce"])
    cfg = WeightPruningConfig(pruning_configs=[group], **group)
    conf = process_config(cfg)[0]
    layers = {name: torch.from_numpy(scores[name]) for name in case["layers"]}
    modules = {name: module(tuple(s.shape)) for name, s in layers.items()}
    pattern = get_pattern(conf, modules)
    if ":" in case["pattern"]:
        inc_scores = dict(layers)  # INC's N:M pattern has no reduce_score: criteria keep element scores
    else:
        inc_scores = {n: pattern.reduce_score(s, n) for n, s in layers.items()}
    pre = {n: torch.ones(s.shape) for n, s in layers.items()}
    try:
        masks = pattern.get_masks(inc_scores, case["target"], pre)
    except Exception as exc:  # recorded: INC failing on a case is a finding too
        out[case["id"] + "/#error"] = np.array(f"{type(exc).__name__}: {exc}")
        continue
    for n in layers:
        out[case["id"] + "/" + n] = masks[n].bool().numpy()
    out[case["id"] + "/#block_size"] = np.array(json.dumps(getattr(pattern, "block_size", None)))
np.savez(sys.argv[3], **out)
'''

LAYERS = {"fc1": (64, 48), "fc2": (32, 64), "fc3": (16, 32), "conv": (16, 8, 3, 3)}
LINEAR = ["fc1", "fc2", "fc3"]
ALL = LINEAR + ["conv"]


def _case(cid, pattern, scope, target, layers, max_=0.98, min_=0.0, reduce="mean", global_target="weights"):
    return {"id": cid, "pattern": pattern, "scope": scope, "target": target, "layers": layers,
            "max": max_, "min": min_, "reduce": reduce, "global_target": global_target}


MATCH_CASES = [
    _case(f"{p}-{scope}-{t}", p, scope, t, ALL)
    for p in ("4x1", "2x2", "1x1", "8x4") for scope in ("global", "local") for t in (0.5, 0.8)
] + [
    # INC counts channels in global scope; rows of different lengths make that differ from the weights
    _case(f"{p}-linear-{scope}", p, scope, 0.6, LINEAR, global_target="units")
    for p in ("1xchannel", "channelx1") for scope in ("global", "local")
] + [
    _case(f"{p}-{scope}-{t}", p, scope, t, ALL)
    for p, ts in (("2:4", (0.5, 0.25)), ("1:4", (0.25, 0.125)), ("2:8", (0.25, 0.125)))
    for scope in ("global", "local") for t in ts
] + [
    # the low-scored layer "weak" would be pruned far past max_sparsity_ratio_per_op=0.7
    _case("4x1-max-bound", "4x1", "global", 0.5, ALL + ["weak"], max_=0.7),
    _case("2:4-max-bound", "2:4", "global", 0.25, ALL + ["weak"], max_=0.4),
    _case("1x1-local-above-max", "1x1", "local", 0.9, ALL, max_=0.75),
] + [
    _case(f"{p}-{scope}-{r}", p, scope, 0.5, ALL, reduce=r)
    for p in ("4x1", "2x2", "2:4") for scope in ("global", "local") for r in ("sum", "max")
]
CONV_CHANNEL_CASES = [_case(f"{p}-conv", p, "global", 0.5, ["conv"]) for p in ("1xchannel", "channelx1")]
ROUNDING_CASE = _case("1x1-rounding", "1x1", "local", 0.57, ["r100"])
MIN_CASE = _case("4x1-min-bound", "4x1", "global", 0.5, ALL + ["strong"], min_=0.3)
CASES = MATCH_CASES + CONV_CHANNEL_CASES + [ROUNDING_CASE, MIN_CASE]


def _scores():
    rng = np.random.default_rng(20240611)
    scores = {n: rng.random(s) for n, s in LAYERS.items()}
    scores["weak"] = rng.random((32, 32)) * 1e-3  # scores far below every other layer's
    scores["strong"] = rng.random((32, 32)) + 10.0  # scores far above every other layer's
    scores["r100"] = rng.random((10, 10))
    for a in scores.values():  # no ties anywhere
        assert np.unique(a).size == a.size
    return scores


def _inc_available() -> str:
    if not INC_PYTHON.exists():
        return f"INC 2.6 environment not found at {INC_PYTHON}; create it with `bash scripts/inc_env.sh`"
    probe = subprocess.run([str(INC_PYTHON), "-c", "import neural_compressor.compression.pruner.patterns"],
                           capture_output=True, text=True)
    if probe.returncode:
        return f"{INC_PYTHON} cannot import INC's pruner: {probe.stderr.strip().splitlines()[-1:]}"
    return ""


@pytest.fixture(scope="module")
def inc(tmp_path_factory):
    reason = _inc_available()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("inc")
    scores = _scores()
    np.savez(tmp / "scores.npz", **scores)
    (tmp / "cases.json").write_text(json.dumps(CASES))
    (tmp / "driver.py").write_text(DRIVER)
    run = subprocess.run([str(INC_PYTHON), str(tmp / "driver.py"), str(tmp / "scores.npz"),
                          str(tmp / "cases.json"), str(tmp / "out.npz")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    out = dict(np.load(tmp / "out.npz"))
    return scores, out


def _ours(scores, case, pattern=None):
    return compute_masks({n: scores[n] for n in case["layers"]}, pattern or case["pattern"], case["target"],
                         scope=case["scope"], max_sparsity_ratio_per_op=case["max"],
                         min_sparsity_ratio_per_op=case["min"], criterion_reduce_type=case["reduce"],
                         global_target=case["global_target"])


def _theirs(out, case):
    error = out.get(case["id"] + "/#error")
    assert error is None, f"INC failed on {case['id']}: {error}"
    return {n: out[case["id"] + "/" + n] for n in case["layers"]}


@pytest.mark.parametrize("case", MATCH_CASES, ids=[c["id"] for c in MATCH_CASES])
def test_masks_match_inc(inc, case):
    scores, out = inc
    ours, theirs = _ours(scores, case), _theirs(out, case)
    pruned_ours = sum(int((~m).sum()) for m in ours.values())
    pruned_theirs = sum(int((~m).sum()) for m in theirs.values())
    assert pruned_ours == pruned_theirs
    assert pruned_ours > 0
    for n in case["layers"]:
        assert ours[n].shape == theirs[n].shape == scores[n].shape
        assert np.array_equal(ours[n], theirs[n]), f"{case['id']}: layer {n} differs"


def test_max_bound_case_really_binds(inc):
    """The bound cases are only meaningful if the bound is what decides the weak layer."""
    scores, out = inc
    case = next(c for c in MATCH_CASES if c["id"] == "4x1-max-bound")
    weak = _theirs(out, case)["weak"]
    assert int((~weak).sum()) == count_for_ratio(32 * 32 // 4, 0.7) * 4  # floor(256 * 0.7) blocks of 4
    case = next(c for c in MATCH_CASES if c["id"] == "2:4-max-bound")
    weak = _theirs(out, case)["weak"]
    assert int((~weak).sum()) == count_for_ratio(32 * 8, 0.4 * 2) * 2  # floor(256 groups * 0.8), 2 weights each


@pytest.mark.parametrize("case", CONV_CHANNEL_CASES, ids=[c["id"] for c in CONV_CHANNEL_CASES])
def test_inc_channel_patterns_on_conv_are_kernel_position_blocks(inc, case):
    scores, out = inc
    o, i, kh, kw = LAYERS["conv"]
    theirs = _theirs(out, case)["conv"]
    explicit = f"1x{i}" if case["pattern"] == "1xchannel" else f"{o}x1"
    assert json.loads(str(out[case["id"] + "/#block_size"]))["conv"] == ([1, i] if case["pattern"] == "1xchannel" else [o, 1])
    assert np.array_equal(_ours(scores, case, explicit)["conv"], theirs)
    assert np.array_equal(_ours(scores, case, "inc_" + case["pattern"])["conv"], theirs)  # INC's meaning, by name
    # and not nc_prune's whole filters / whole input channels
    ours = _ours(scores, case)["conv"]
    assert not np.array_equal(ours, theirs)
    if case["pattern"] == "1xchannel":
        assert all(ours[f].all() or not ours[f].any() for f in range(o))
        assert any(theirs[f].any() and not theirs[f].all() for f in range(o))
    else:
        assert all(ours[:, c].all() or not ours[:, c].any() for c in range(i))
        assert any(theirs[:, c].any() and not theirs[:, c].all() for c in range(i))


def test_inc_floors_the_binary_product(inc):
    scores, out = inc
    case = ROUNDING_CASE
    assert 100 * 0.57 < 57  # 56.99999999999999
    theirs = _theirs(out, case)["r100"]
    ours = _ours(scores, case)["r100"]
    assert int((~theirs).sum()) == 56
    assert int((~ours).sum()) == 57
    assert not (~theirs & ours).any()  # INC's 56 are nc_prune's 56 lowest plus one


def test_min_bound_inc_leaves_layer_below_minimum(inc):
    scores, out = inc
    case = MIN_CASE
    theirs, ours = _theirs(out, case), _ours(scores, case)
    strong_units = 32 * 32 // 4
    assert int((~ours["strong"]).sum()) // 4 == int(np.ceil(strong_units * 0.3))  # nc_prune: exactly the minimum
    assert int((~theirs["strong"]).sum()) // 4 < int(np.ceil(strong_units * 0.3))  # INC: below it
    total_units = sum(int(np.prod(scores[n].shape)) // 4 for n in case["layers"])
    assert sum(int((~m).sum()) for m in ours.values()) // 4 == int(total_units * 0.5)
    assert sum(int((~m).sum()) for m in theirs.values()) // 4 == int(total_units * 0.5)  # same budget
    # ... but INC's blocks in the unbounded layers are no longer the lowest-scored ones: its adjust_ratio
    # trims layers in the order it visits them, so a pruned block can outscore a kept one elsewhere
    from nc_prune.core.arrays import to_2d

    def blocks(a):  # 4x1 block view of the canonical 2-D layout
        v = to_2d(a)
        return v.reshape(v.shape[0] // 4, 4, v.shape[1]).transpose(0, 2, 1).reshape(-1, 4)

    free = [n for n in case["layers"] if n != "strong"]
    score = np.concatenate([blocks(scores[n]).mean(axis=1) for n in free])
    inc_pruned = np.concatenate([~blocks(theirs[n]).any(axis=1) for n in free])
    our_pruned = np.concatenate([~blocks(ours[n]).any(axis=1) for n in free])
    assert score[our_pruned].max() < score[~our_pruned].min()
    assert score[inc_pruned].max() > score[~inc_pruned].min()


def test_weighted_channel_target_differs_from_inc_where_rows_differ(inc):
    scores, out = inc
    case = next(c for c in MATCH_CASES if c["id"] == "1xchannel-linear-global")
    theirs = _theirs(out, case)
    ours = _ours(scores, dict(case, global_target="weights"))
    weights = sum(int(np.prod(LAYERS[n])) for n in LINEAR)
    pruned_theirs = sum(int((~m).sum()) for m in theirs.values())
    pruned_ours = sum(int((~m).sum()) for m in ours.values())
    assert 0 <= count_for_ratio(weights, 0.6) - pruned_ours < max(LAYERS[n][1] for n in LINEAR)
    assert pruned_theirs != pruned_ours  # INC: 60 % of the rows, whatever their length
