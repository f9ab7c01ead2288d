"""One-shot quality on a real language model: held-out perplexity per method, beside INC 2.6 and llm-compressor.

    python benchmarks/oneshot_quality.py [--seeds 0,1,2] [--samples 128] [--length 256]
        [--inc-python PY] [--llmc-python PY] [--json OUT.json]

The model is ``models/stdlib-lm`` (a 4-block Llama with grouped-query attention, 3.95M parameters,
trained here on the Python standard library; held-out perplexity 27.71). For each setting — 50 %
unstructured, 2:4, 70 % unstructured — it is pruned by

* nc_prune: ``magnitude`` (``pruning_scope="local"``: each layer to the target by ``|W|``, the papers'
  baseline; it needs no data, so it runs once), ``wanda``, ``sparse_gpt``, and at 50 % and 70 % both with
  ``sparsity_allocation="owl"``;
* INC 2.6's ``sparse_gpt`` (``benchmarks/oneshot_refs/inc_sparsegpt.py`` in INC's environment) and
  llm-compressor's ``SparseGPTModifier`` and ``WandaPruningModifier`` (``llmc_oneshot.py`` in its own),
  when their environments are given;

every calibrated run once per calibration seed (``samples`` windows of ``length`` tokens of
``calib.txt`` at random positions drawn from the seed — the same token ids for every system), each in a
fresh process started the same way, with two torch threads. Per run: held-out perplexity (64 windows x
256 tokens, ``benchmarks/lm_eval.py``, computed here for every system's output), the time of the pruning
call alone and the memory it added over the process's resident set after loading (peak RSS mark reset
just before it), and the pruned fraction of the decoder's linear layers. For the references also: the
fraction of weights pruned or kept alike by them and by nc_prune's run of the same method on the same
calibration data. Times and memory are compared as ratios between systems measured in this one run, never
as bare figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

from _common import collect, emit, peak, reset_peak  # noqa: E402

#: name -> (pattern, target sparsity)
SETTINGS = {"50%": ("1x1", 0.5), "2:4": ("2:4", 0.5), "70%": ("1x1", 0.7)}
#: nc_prune's runs: name -> config keywords (``owl`` ones only for unstructured settings)
OURS = {"magnitude": dict(pruning_type="magnitude", pruning_scope="local"),
        "wanda": dict(pruning_type="wanda"),
        "sparse_gpt": dict(pruning_type="sparse_gpt"),
        "wanda+owl": dict(pruning_type="wanda", parameters={"sparsity_allocation": "owl"}),
        "sparse_gpt+owl": dict(pruning_type="sparse_gpt", parameters={"sparsity_allocation": "owl"})}
#: reference runs: name -> (environment, driver, extra arguments)
REFS = {"INC sparse_gpt": ("inc", "inc_sparsegpt.py", []),
        "llmc sparse_gpt": ("llmc", "llmc_oneshot.py", ["--method", "sparse_gpt"]),
        "llmc wanda": ("llmc", "llmc_oneshot.py", ["--method", "wanda"])}
THREADS = 2


def runs_of(setting: str) -> List[str]:
    pattern = SETTINGS[setting][0]
    return [m for m in OURS if pattern == "1x1" or "owl" not in m]


def linear_sparsity(model) -> float:
    """Zeros over weights of the decoder blocks' ``nn.Linear`` layers (what every system prunes)."""
    import torch
    zeros = total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            zeros += int((mod.weight == 0).sum())
            total += mod.weight.numel()
    return zeros / total


# ---- one nc_prune run, in a fresh process -------------------------------------------------------------
def run_ours(method: str, setting: str, seed: int, samples: int, length: int, out: Optional[str] = None) -> Dict:
    import torch
    from lm_eval import calibration_batches, load_model, perplexity

    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    torch.set_num_threads(THREADS)
    pattern, target = SETTINGS[setting]
    calib = calibration_batches(n=samples, length=length, seed=seed)
    model = load_model()
    config = WeightPruningConfig(pattern=pattern, target_sparsity=target, **OURS[method])
    before = reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruning = prepare_pruning(model, config, dataloader=calib)
    seconds = time.perf_counter() - start
    extra = peak() - before
    pruning.strip()
    if out:
        model.save_pretrained(out)
    return {"system": "nc_prune", "method": method, "setting": setting, "seed": seed,
            "perplexity": perplexity(model), "prune_seconds": seconds, "extra_mib": extra / 2**20,
            "sparsity": linear_sparsity(model)}


def masks(model_dir: str) -> Dict[str, "object"]:
    """``weight != 0`` of every decoder-block linear layer of a saved model."""
    from lm_eval import load_model
    import torch
    return {n: m.weight != 0 for n, m in load_model(model_dir).named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n}


def agreement(a: Dict, b: Dict) -> float:
    """Fraction of decoder-block weights whose kept/pruned state is the same in two models."""
    same = sum(int((a[n] == b[n]).sum()) for n in a)
    return same / sum(a[n].numel() for n in a)


# ---- one reference run: its driver in its environment, its output evaluated here --------------------
def calibration_file(seed: int, samples: int, length: int, folder: str) -> str:
    import numpy as np
    from lm_eval import calibration_batches
    path = os.path.join(folder, f"calib_{seed}.npz")
    if not os.path.exists(path):
        batches = calibration_batches(n=samples, length=length, seed=seed)
        np.savez(path, input_ids=np.stack([b["input_ids"].numpy() for b in batches]))
    return path


def run_ref(name: str, python: str, setting: str, seed: int, calib: str, folder: str) -> Dict:
    from lm_eval import MODEL_DIR, load_model, perplexity
    _, driver, extra = REFS[name]
    pattern, target = SETTINGS[setting]
    out = os.path.join(folder, f"{name.replace(' ', '_')}_{setting.replace('%', '').replace(':', 'in')}_{seed}")
    cmd = [python, os.path.join(HERE, "oneshot_refs", driver), MODEL_DIR, calib, out, "--pattern", pattern,
           "--sparsity", str(target), "--threads", str(THREADS), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    model = load_model(os.path.join(out, "model"))
    return {"system": name.split()[0], "method": name, "setting": setting, "seed": seed,
            "perplexity": perplexity(model), "prune_seconds": result["time_s"]["prune"],
            "extra_mib": result["memory_mib"]["extra_during_prune"], "sparsity": linear_sparsity(model),
            "versions": result.get("versions", {}), "model_dir": os.path.join(out, "model")}


# ---- the whole comparison ------------------------------------------------------------------------------
def child(args: argparse.Namespace, out: str, *what: str) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", *what, "--samples", str(args.samples),
           "--length", str(args.length), "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(what)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return collect(proc.stdout)[0]


def summarise(runs: List[Dict], dense: float) -> Dict[str, Dict[str, Dict]]:
    """setting -> method -> mean/min/max perplexity over seeds, gap to dense, mean time and memory."""
    table: Dict[str, Dict[str, Dict]] = {}
    for r in runs:
        table.setdefault(r["setting"], {}).setdefault(r["method"], []).append(r)
    out: Dict[str, Dict[str, Dict]] = {}
    for setting, methods in table.items():
        out[setting] = {}
        for method, rs in methods.items():
            ppl = [r["perplexity"] for r in rs]
            out[setting][method] = {
                "system": rs[0]["system"], "seeds": len(rs), "perplexity": statistics.fmean(ppl),
                "perplexity_min": min(ppl), "perplexity_max": max(ppl), "gap": statistics.fmean(ppl) - dense,
                "prune_seconds": statistics.fmean(r["prune_seconds"] for r in rs),
                "extra_mib": statistics.fmean(r["extra_mib"] for r in rs),
                "sparsity": statistics.fmean(r["sparsity"] for r in rs)}
            if "mask_agreement" in rs[0]:
                out[setting][method]["mask_agreement"] = min(r["mask_agreement"] for r in rs)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="calibration seeds, comma-separated")
    parser.add_argument("--samples", type=int, default=128, help="calibration windows per seed")
    parser.add_argument("--length", type=int, default=256, help="tokens per calibration window")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="of " + ", ".join(SETTINGS))
    parser.add_argument("--inc-python", default=None, help="python of INC 2.6's environment")
    parser.add_argument("--llmc-python", default=None, help="python of llm-compressor's environment")
    parser.add_argument("--skipped", action="append", default=[], metavar="SYSTEM=REASON",
                        help="a reference left out and why (recorded in the result)")
    parser.add_argument("--json", default=None, help="write runs and summary here too")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "SETTING", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        emit(run_ours(args.one[0], args.one[1], int(args.one[2]), args.samples, args.length, args.out))
        return
    import torch
    from lm_eval import load_model, perplexity
    torch.set_num_threads(THREADS)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    dense = perplexity(load_model())
    print(f"dense: perplexity {dense:.3f}", flush=True)
    pythons = {"inc": args.inc_python, "llmc": args.llmc_python}
    runs: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="oneshot_quality_") as folder:
        for setting in settings:
            for seed in seeds:
                for method in runs_of(setting):
                    if method == "magnitude" and seed != seeds[0]:
                        continue  # no calibration data: the same masks for every seed
                    r = child(args, os.path.join(folder, f"ours_{method}"), method, setting, str(seed))
                    runs.append(r)
                    print(f"{setting} seed {seed} nc_prune {method}: {r['perplexity']:.3f} "
                          f"({r['prune_seconds']:.1f} s, +{r['extra_mib']:.0f} MiB)", flush=True)
                for name, (env, _, _) in REFS.items():
                    if pythons[env]:
                        calib = calibration_file(seed, args.samples, args.length, folder)
                        r = run_ref(name, pythons[env], setting, seed, calib, folder)
                        ours = os.path.join(folder, "ours_" + name.split()[1])  # same method, setting, seed
                        r["mask_agreement"] = agreement(masks(r.pop("model_dir")), masks(ours))
                        runs.append(r)
                        print(f"{setting} seed {seed} {name}: {r['perplexity']:.3f} "
                              f"({r['prune_seconds']:.1f} s, +{r['extra_mib']:.0f} MiB; masks "
                              f"{r['mask_agreement']:.2%} the same as nc_prune's)", flush=True)
    summary = summarise(runs, dense)
    for setting, methods in summary.items():
        mag = methods["magnitude"]["gap"]
        for method, s in methods.items():
            print(f"{setting:>4} {method:>16}: {s['perplexity']:7.3f} [{s['perplexity_min']:.3f}, "
                  f"{s['perplexity_max']:.3f}] gap {s['gap']:+.3f} = {s['gap'] / mag:.2f} x magnitude's", flush=True)
    result = {"model": "models/stdlib-lm", "dense_perplexity": dense, "seeds": seeds, "samples": args.samples,
              "length": args.length, "threads": THREADS, "settings": {k: list(v) for k, v in SETTINGS.items()},
              "references": {env: bool(py) for env, py in pythons.items()},
              "skipped": dict(s.split("=", 1) for s in args.skipped), "summary": summary, "runs": runs}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
    emit(result)


if __name__ == "__main__":
    main()
