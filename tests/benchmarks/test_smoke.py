"""The benchmark suite at its smallest size, in-process: its exactness claims hold, not its timings.

The suite's comparisons rest on these: the generated scores have distinct, exactly reproducible unit
scores (so INC's masks and nc_prune's can be compared element for element), nc_prune prunes exactly k
units with the per-layer bound binding where the scores say it must, INC 2.6 picks the same masks (when
its environment exists), the 3B benchmark's streaming scores give an exact cut, the training benchmark
measures steps after the schedule has ended, and the report renders from a results file.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path[:0] = [str(BENCH)]

common = importlib.import_module("_common")
global_masks = importlib.import_module("global_masks")

INC_PYTHON = Path(os.environ.get("NC_PRUNE_INC_PYTHON", BENCH / ".envs" / "inc" / "bin" / "python"))
LAYERS, SIZE = 6, 32


@pytest.fixture(scope="module", params=["4x1", "2:4", "1x1"])
def saved(request, tmp_path_factory):
    pattern = request.param
    d = tmp_path_factory.mktemp(pattern.replace(":", "in"))
    global_masks.generate(str(d), pattern, LAYERS, SIZE, seed=3)
    return pattern, d


def _unit_scores(pattern, s):
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        return np.sort(s.reshape(-1, m), axis=1)[:, :n]
    a, b = (int(x) for x in pattern.split("x"))
    return s.reshape(s.shape[0] // a, a, s.shape[1] // b, b).transpose(0, 2, 1, 3).reshape(-1, a * b)


def test_scores_have_distinct_units_that_every_summation_order_gives_exactly(saved):
    pattern, d = saved
    scores = global_masks.load(str(d))
    assert len(scores) == LAYERS and all(s.shape == (SIZE, SIZE) and s.dtype == np.float32 for s in scores.values())
    units = [_unit_scores(pattern, s) for s in scores.values()]
    # every value of a unit's N lowest is the same number, so any order sums to the same float
    assert all((u == u[:, :1]).all() for u in units)
    firsts = np.concatenate([u[:, 0] for u in units])
    assert np.unique(firsts).size == firsts.size
    # the three "weak" layers hold the lowest scores of all
    per = units[0].shape[0]
    assert firsts[: 3 * per].max() < firsts[3 * per:].min()


def test_nc_prune_prunes_exactly_k_with_the_bound_binding(saved):
    pattern, d = saved
    target, max_ratio = global_masks.SETTINGS[pattern]
    ours = global_masks.run_ours(str(d), pattern, target, max_ratio, repeat=1)
    per, _ = common.units_of(pattern, SIZE, SIZE)
    scale = 2.0 if ":" in pattern else 1.0
    k = int(np.floor(round(per * LAYERS * target * scale, 6)))
    hi = int(np.floor(round(per * min(1.0, max_ratio * scale), 6)))
    counts = ours["pruned_units"]
    assert sum(counts.values()) == k
    assert counts == global_masks.expected_counts(str(d), pattern, target, max_ratio)
    assert [counts[f"layer{i:02d}"] for i in range(3)] == [hi] * 3  # the weak layers stop at their bound
    assert all(c < hi for n, c in counts.items() if n >= "layer03")


@pytest.mark.skipif(not INC_PYTHON.exists(), reason=f"no INC 2.6 environment at {INC_PYTHON} "
                                                    "(bash scripts/inc_env.sh builds it)")
def test_inc_picks_the_same_masks(saved):
    pattern, d = saved
    if pattern == "1x1":
        pytest.skip("4x1 and 2:4 cover INC's two mask paths; 1x1 runs in the suite")
    target, max_ratio = global_masks.SETTINGS[pattern]
    run = subprocess.run([str(INC_PYTHON), str(BENCH / "inc_masks.py"), str(d), "--pattern", pattern,
                          "--target", str(target), "--max", str(max_ratio)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    (theirs,) = common.collect(run.stdout)
    ours = global_masks.run_ours(str(d), pattern, target, max_ratio, repeat=1)
    assert theirs["pruned_units"] == ours["pruned_units"]
    assert theirs["digests"] == ours["digests"]


def test_streaming_magnitudes_of_bfloat16_weights_give_an_exact_cut():
    torch = pytest.importorskip("torch")
    mask_3b = importlib.import_module("mask_3b")
    from nc_prune import compute_masks
    weights = mask_3b.build(5, 64, 32, seed=1)
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    scores = mask_3b.Magnitudes(weights)
    masks = compute_masks(scores, "4x1", 0.8, max_sparsity_ratio_per_op=0.9)
    assert all(isinstance(m, np.ndarray) and m.dtype == bool and m.shape == (64, 32) for m in masks.values())
    per, _ = common.units_of("4x1", 64, 32)
    hi = int(np.floor(round(per * 0.9, 6)))
    k = int(np.floor(round(per * 5 * 0.8, 6)))
    result = mask_3b.check(weights, masks, "4x1", k, hi)
    assert result["exact_k"] and result["pruned_blocks"] == k
    assert result["threshold_property"]
    assert result["layers_at_bound"] >= 2  # the two small layers


def test_training_benchmark_times_steps_after_the_schedule():
    torch = pytest.importorskip("torch")
    train = importlib.import_module("train_overhead")
    from nc_prune.torch import prepare_pruning
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 4))
    batches = [(torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g))]
    t = train.Trainer(model, batches)
    pruning = prepare_pruning(model, train.config(0, 20, 5), t.opt)
    t.steps(25)  # what run() does before timing
    assert pruning.session.is_done()
    pruned = [m.weight for m in (model[0], model[2])]  # the head stays dense
    zeros = sum(int((w == 0).sum()) for w in pruned)
    assert zeros == int(0.8 * sum(w.numel() for w in pruned))
    before = [w.detach().clone() for w in pruned]
    t.steps(2)
    assert all(torch.equal(a == 0, b == 0) for a, b in zip(before, pruned))  # masks fixed from here on


def test_report_renders_from_a_results_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    report = importlib.import_module("report")
    monkeypatch.setattr(report, "DOCS", str(tmp_path))
    monkeypatch.setattr(report, "IMG", str(tmp_path / "img"))
    row = {"pattern": "4x1", "layers": 48, "size": 64, "params": 48 * 64 * 64, "target": 0.5,
           "max_sparsity_ratio_per_op": 0.9, "k": 24576, "pruned_total": 24576, "exact_k": True,
           "counts_equal_reference": True, "reference": "inc", "masks_equal": True, "ratio": 12.0, "bound_binds": 3,
           "ours": {"seconds": 0.01, "runs": 3, "extra_mib": 0.5, "largest_layer_scores_mib": 0.02},
           "inc": {"seconds": 0.12, "runs": 3, "extra_mib": 2.0}}
    res = {"run": "quick", "date": "today", "command": "bash benchmarks/run.sh --quick",
           "machine": {"cpu": "cpu", "cores": "2", "ram_gib": "24", "python": "3", "numpy": "2"},
           "inc": {"python": "inc/bin/python", "skipped": None},
           "benchmarks": {"global_masks": {"returncode": 0, "results": [row, dict(row, size=128, params=48 * 128 ** 2)],
                                           "command": "python benchmarks/global_masks.py", "seconds": 1.0,
                                           "stdout": [], "log": "x.log"},
                          "mask_3b": {"returncode": 1, "results": [], "command": "python benchmarks/mask_3b.py",
                                      "seconds": 1.0, "stdout": [], "log": "3b.log"}}}
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(res))
    page = Path(report.write(str(path))).read_text()
    assert "| Global mask generation ≥ 10x faster than INC 2.6 (48 layers, 0.8M params) | 4x1 12x | **yes** |" in page
    assert "Not measured: failed (exit 1); log: `3b.log`." in page
    assert "```python" not in page  # the docs tests would run it
    assert (tmp_path / "img" / "bench_global_masks.png").stat().st_size > 0


def test_one_shot_quality_run_prunes_the_shipped_model_exactly_and_summarises_over_seeds():
    pytest.importorskip("transformers")
    quality = importlib.import_module("oneshot_quality")
    runs = [quality.run_ours("wanda", "2:4", seed, samples=4, length=64) for seed in (0, 1)]
    assert [r["sparsity"] for r in runs] == [0.5, 0.5]  # 2 of every 4 in every decoder-block linear layer
    dense = 27.71
    assert all(r["perplexity"] > dense and r["extra_mib"] >= 0 for r in runs)
    assert runs[0]["perplexity"] != runs[1]["perplexity"]  # the seed draws other calibration windows
    mag = dict(runs[0], method="magnitude", perplexity=31.0)
    summary = quality.summarise(runs + [mag], dense)["2:4"]
    ppl = sorted(r["perplexity"] for r in runs)
    assert summary["wanda"]["seeds"] == 2 and summary["wanda"]["perplexity_min"] == ppl[0]
    assert summary["wanda"]["perplexity"] == pytest.approx(sum(ppl) / 2)
    assert summary["magnitude"]["gap"] == pytest.approx(31.0 - dense)
    assert quality.runs_of("2:4") == ["magnitude", "wanda", "sparse_gpt"]  # OWL needs an unstructured target


def test_report_renders_the_one_shot_section_with_its_verdicts(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    report = importlib.import_module("report")
    monkeypatch.setattr(report, "DOCS", str(tmp_path))
    monkeypatch.setattr(report, "IMG", str(tmp_path / "img"))

    def row(system, ppl, seconds=5.0, mib=100.0, **extra):
        return dict({"system": system, "seeds": 3, "perplexity": ppl, "perplexity_min": ppl - 0.1,
                     "perplexity_max": ppl + 0.1, "gap": ppl - 27.0, "prune_seconds": seconds, "extra_mib": mib,
                     "sparsity": 0.5}, **extra)
    summary = {"50%": {"magnitude": row("nc_prune", 30.0), "sparse_gpt": row("nc_prune", 27.9),
                       "INC sparse_gpt": row("INC", 28.0, seconds=10.0, mib=200.0, mask_agreement=0.99)}}
    quality = {"dense_perplexity": 27.0, "seeds": [0, 1, 2], "samples": 128, "length": 256, "threads": 2,
               "references": {"inc": True, "llmc": False}, "skipped": {"llmc": "no env"}, "summary": summary}
    scale = [{"width": w, "params": w * 1000, "tokens": 8192, "method": "wanda", "time_ratio": 3.0,
              "extra_bytes": 2**20, "extra_ratio": 0.5, "held_bytes": 2**19} for w in (128, 256)]
    bench = {"returncode": 0, "command": "python x.py", "seconds": 1.0, "stdout": [], "log": "x.log"}
    res = {"run": "quick", "date": "today", "command": "bash benchmarks/run.sh --quick",
           "machine": {"cpu": "cpu", "cores": "2", "ram_gib": "24", "python": "3", "numpy": "2"},
           "inc": {"python": "inc/bin/python", "skipped": None},
           "benchmarks": {"oneshot_quality": dict(bench, results=[quality]),
                          "oneshot_scale": dict(bench, results=scale)}}
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(res))
    page = Path(report.write(str(path))).read_text()
    assert "| One-shot: SparseGPT's perplexity gap to dense at 50 % ≤ ⅓ of magnitude's | 0.30 (+0.900 vs +3.000) | **yes** |" in page
    assert ("| One-shot sparse_gpt: perplexity at most INC sparse_gpt's (time, memory: nc_prune / INC) | "
            "50% 27.900 vs 28.000, time x0.50, memory x0.50 | **yes** |") in page
    assert "llm-compressor was not part of this run: no env." in page
    assert "| 50% | INC sparse_gpt | 28.000 | 27.900–28.100 | +1.000 | 0.33 | 10.0 s | 200 MiB | 50.00 % | 99.00 % |" in page
    assert (tmp_path / "img" / "bench_oneshot_quality.png").stat().st_size > 0
    assert (tmp_path / "img" / "bench_oneshot_scale.png").stat().st_size > 0


def test_slim_speed_case_removes_exactly_the_share_and_keeps_the_outputs():
    pytest.importorskip("transformers")
    slim = importlib.import_module("slim_speed")
    r = slim.run_case("bert", 0.25, "quick", rounds=1, tp_python=None, work="unused", skipped="no env")
    # 2 layers of 12 heads and 1536 FFN channels: 3 heads and 384 channels go from each
    assert r["removed"] == {"heads": 6, "channels": 768}
    # per layer: q, k, v lose 96 rows (3 heads of 32) with their biases, o 96 columns; the FFN's first Linear
    # 384 rows with their biases, the second 384 columns (the biases of the layers writing the hidden size stay)
    per_layer = 3 * (96 * 384 + 96) + 384 * 96 + (384 * 384 + 384) + 384 * 384
    assert r["block_params"]["dense"] - r["block_params"]["nc_prune"] == 2 * per_layer
    assert r["output_diff"] < 1e-4 and r["tp"] is None and r["tp_skipped"] == "no env"
    assert set(r["seconds"]) == {"dense", "nc_prune"} and r["speedup"]["nc_prune"] > 0


def test_report_renders_the_slimming_section_with_its_verdicts(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    report = importlib.import_module("report")
    monkeypatch.setattr(report, "DOCS", str(tmp_path))
    monkeypatch.setattr(report, "IMG", str(tmp_path / "img"))

    def row(kind, fraction, share, ours, tp):
        return {"kind": kind, "fraction": fraction, "layers": 12, "scale": 1.0, "batch": 8, "size": 128,
                "rounds": 15, "removed": {"heads": 36, "channels": 9216}, "output_diff": 1e-6,
                "params": {"dense": 100e6, "nc_prune": 80e6}, "block_params": {"dense": 80e6, "nc_prune": 80e6 * (1 - share)},
                "removed_share": {"nc_prune": share, "torch_pruning": share},
                "speedup": {"nc_prune": ours, "torch_pruning": tp}, "nc_over_tp": tp / ours}
    bench = {"returncode": 0, "command": "python x.py", "seconds": 1.0, "stdout": [], "log": "x.log"}
    res = {"run": "quick", "date": "today", "command": "bash benchmarks/run.sh --quick",
           "machine": {"cpu": "cpu", "cores": "2", "ram_gib": "24", "python": "3", "numpy": "2"},
           "inc": {"python": None, "skipped": "no"}, "tp": {"python": "tp/bin/python", "skipped": None},
           "benchmarks": {"slim_speed": dict(bench, results=[row("bert", 0.25, 0.25, 1.35, 1.30),
                                                             row("llama", 0.5, 0.5, 1.8, 2.0)])}}
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(res))
    page = Path(report.write(str(path))).read_text()
    assert f"| {report.SLIM_TARGET} | bert 25 % (25 % removed) x1.35 | **yes** |" in page
    assert f"| {report.SLIM_TP_TARGET} | bert 25 % x0.96; llama 50 % x1.11 | **no** |" in page
    assert "| BERT-base-shaped encoder (12 layers, batch 8 x 128 tokens) at 25 % | 9216 channels, 36 heads | " \
           "80.0M → 60.0M | 25.0 % | 100.0M → 80.0M | **x1.35** | x1.30 | x0.96 | 1.0e-06 | 15 |" in page
    assert (tmp_path / "img" / "bench_slim_speed.png").stat().st_size > 0


def test_report_renders_the_distributed_section(tmp_path, monkeypatch):
    report = importlib.import_module("report")
    monkeypatch.setattr(report, "DOCS", str(tmp_path))
    monkeypatch.setattr(report, "IMG", str(tmp_path / "img"))

    def row(ranks, t, mem, w):
        return {"ranks": ranks, "layers": 8, "size": 1024, "pattern": "4x1", "scope": "global", "target": 0.5,
                "pruned": 3670016, "of": 7340032, "masks_equal_1_rank": True, "time_vs_1_rank": t,
                "extra_mem_per_rank_vs_1_rank": mem, "weights_per_rank_vs_1_rank": w, "comm_bytes_per_update": 3699024,
                "collective_calls": {"all_reduce": 4, "all_gather": 1}, "extra_mem_per_rank_mib": 3.0}
    bench = {"returncode": 0, "command": "python x.py", "seconds": 1.0, "stdout": [], "log": "x.log"}
    res = {"run": "quick", "date": "today", "command": "bash benchmarks/run.sh --quick",
           "machine": {"cpu": "cpu", "cores": "2", "ram_gib": "24", "python": "3", "numpy": "2"},
           "inc": {"python": None, "skipped": "no"},
           "benchmarks": {"distributed_masks": dict(bench, results=[row(1, 1.0, 1.0, 1.0), row(4, 1.88, 0.45, 0.25)])}}
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(res))
    page = Path(report.write(str(path))).read_text()
    assert "| 4 | yes | x1.88 | x0.45 (3.0) | x0.25 | 3,699,024 | all_gather x1, all_reduce x4 |" in page
    assert (f"| {report.DIST_TARGET} | 4 ranks: memory added per rank x0.45, weights per rank x0.25, "
            "3,699,024 B per update; masks equal: all | — |") in page
