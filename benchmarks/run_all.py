"""Run the whole benchmark suite, each benchmark in its own process, and write the results and the docs.

    python benchmarks/run_all.py [--quick] [--inc-python PATH] [--llmc-python PATH] [--skip 3b,keras,...]
                                 [--only oneshot_quality,... --merge]

``bash benchmarks/run.sh`` is the one command (it also builds the environments). This script runs:

* ``global_masks.py`` — global mask generation, nc_prune vs INC 2.6, three patterns x three sizes;
* ``mask_3b.py`` — a global 4x1 mask over 3.02e9 bfloat16 parameters (0.3e9 with ``--quick``);
* ``train_overhead.py`` — PyTorch training-step overhead after the schedule, on score and mask steps;
* ``torch_prune_global.py`` — ``global_unstructured`` against ``torch.nn.utils.prune`` (if present);
* ``keras_vs_tfmot.py`` — Keras callback vs tfmot (if present; it builds its own environment);
* ``oneshot_scale.py`` — one-shot time and memory per method as a decoder grows (3 widths);
* ``oneshot_quality.py`` — held-out perplexity of the shipped language model after one-shot pruning, per
  method, beside INC 2.6's and llm-compressor's (when their environments are given);
* ``slim_speed.py`` — latency and size of dense vs slimmed BERT, Llama and ResNet-50, beside Torch-Pruning's;
* ``distributed_masks.py`` — global masks of an FSDP2-sharded model on 1, 2 and 4 gloo ranks: time, memory
  per rank and the bytes each rank hands to collectives per mask update.

``--merge`` keeps the other benchmarks' results of an earlier run of the same size and replaces only the
ones run now (with ``--only``), so one benchmark can be rerun without the rest.

Each child's output goes to ``benchmarks/out/logs/``; the results to ``benchmarks/results/<run>.json``
(``quick`` or ``full``); then ``report.py`` writes ``docs/benchmarks.md`` and ``docs/img/bench_*.png``.
A benchmark that fails is recorded as failed (with the end of its log), and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import collect, machine  # noqa: E402

SIZES = {"quick": {"global": ["--layers", "48", "--sizes", "128,256,512", "--repeat", "3"],
                   "3b": ["--layers", "18"],
                   "train": ["--rounds", "9", "--steps", "5"],
                   "torch_prune": ["--layers", "8", "--width", "1024"],
                   "keras": ["--seeds", "1", "--epochs", "8", "--skip-large"],
                   "oneshot_scale": ["--sizes", "128,256,512", "--samples", "16"],
                   "oneshot_quality": ["--seeds", "0", "--samples", "32"],
                   "slim": ["--quick"],
                   "distributed": ["--quick"]},
         "full": {"global": ["--layers", "48", "--sizes", "256,512,1024", "--repeat", "3"],
                  "3b": ["--layers", "180"],
                  "train": ["--rounds", "21", "--steps", "10"],
                  "torch_prune": [],
                  "keras": ["--seeds", "1"],
                  "oneshot_scale": ["--sizes", "256,512,1024"],
                  "oneshot_quality": [],
                  "slim": [],
                  "distributed": []}}
NAMES = {"global": "global_masks", "3b": "mask_3b", "train": "train_overhead", "torch_prune": "torch_prune_global",
         "keras": "keras_vs_tfmot", "oneshot_scale": "oneshot_scale", "oneshot_quality": "oneshot_quality",
         "slim": "slim_speed", "distributed": "distributed_masks"}


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def run_child(name: str, cmd: List[str], log_dir: str) -> Dict:
    """Run one benchmark; its stdout+stderr go to a log file and, line by line, to our stdout."""
    shown = " ".join(["python"] + [shlex.quote(_rel(c) if os.path.isabs(c) and c.startswith(ROOT) else c)
                                   for c in cmd[1:]])
    print(f"\n=== {name}: {shown}", flush=True)
    log = os.path.join(log_dir, name + ".log")
    start = time.perf_counter()
    lines = []
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": ROOT})
        for line in proc.stdout:
            f.write(line)
            lines.append(line)
            if not line.startswith("RESULT "):
                print("    " + line, end="", flush=True)
        proc.wait()
    out = "".join(lines)
    return {"command": shown, "returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "results": collect(out), "stdout": [l.rstrip("\n") for l in lines if not l.startswith("RESULT ")],
            "log": _rel(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: the whole suite in a few minutes")
    parser.add_argument("--inc-python", default=None, help="python of the INC 2.6 environment")
    parser.add_argument("--inc-skipped", default=None, help="why INC is not available (recorded in the docs)")
    parser.add_argument("--llmc-python", default=None, help="python of the llm-compressor environment")
    parser.add_argument("--llmc-skipped", default=None, help="why llm-compressor is not available")
    parser.add_argument("--tp-python", default=None, help="python of the Torch-Pruning environment")
    parser.add_argument("--tp-skipped", default=None, help="why Torch-Pruning is not available")
    parser.add_argument("--skip", default="", help="comma-separated of: " + ",".join(NAMES))
    parser.add_argument("--only", default="", help="comma-separated: run these alone")
    parser.add_argument("--merge", action="store_true", help="keep the other results of the last run of this size")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    run = "quick" if args.quick else "full"
    skip = {s for s in args.skip.split(",") if s}
    only = {s for s in args.only.split(",") if s}
    unknown = sorted((skip | only) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(NAMES)}")
    if only:
        skip |= set(NAMES) - only
    sizes = SIZES[run]
    out_dir = os.path.join(HERE, "out")
    log_dir = os.path.join(out_dir, "logs", run)
    os.makedirs(log_dir, exist_ok=True)
    py = sys.executable
    results: Dict = {"run": run, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                     "command": "bash benchmarks/run.sh" + (" --quick" if args.quick else ""),
                     "inc": {"python": _rel(args.inc_python) if args.inc_python else None,
                             "skipped": None if args.inc_python else (args.inc_skipped or "no INC environment")},
                     "llmc": {"python": _rel(args.llmc_python) if args.llmc_python else None,
                              "skipped": None if args.llmc_python else (args.llmc_skipped or
                                                                        "no llm-compressor environment")},
                     "tp": {"python": _rel(args.tp_python) if args.tp_python else None,
                            "skipped": None if args.tp_python else (args.tp_skipped or
                                                                    "no Torch-Pruning environment")},
                     "benchmarks": {}}
    try:
        import torch
        results["machine"]["torch"] = torch.__version__
    except ImportError:
        pass

    plan = []
    if "global" not in skip:
        cmd = [py, os.path.join(HERE, "global_masks.py"), *sizes["global"],
               "--out", os.path.join(out_dir, f"global_masks_{run}.json")]
        if args.inc_python:
            cmd += ["--inc-python", args.inc_python]
        plan.append(("global_masks", cmd))
    if "3b" not in skip:
        plan.append(("mask_3b", [py, os.path.join(HERE, "mask_3b.py"), *sizes["3b"]]))
    if "train" not in skip:
        plan.append(("train_overhead", [py, os.path.join(HERE, "train_overhead.py"), *sizes["train"]]))
    if "torch_prune" not in skip and os.path.exists(os.path.join(HERE, "torch_prune_global.py")):
        plan.append(("torch_prune_global", [py, os.path.join(HERE, "torch_prune_global.py"), *sizes["torch_prune"]]))
    if "keras" not in skip and os.path.exists(os.path.join(HERE, "keras_vs_tfmot.py")):
        plan.append(("keras_vs_tfmot", [py, os.path.join(HERE, "keras_vs_tfmot.py"), *sizes["keras"],
                                        "--json", os.path.join(out_dir, f"keras_vs_tfmot_{run}.json")]))

    if "oneshot_scale" not in skip:
        plan.append(("oneshot_scale", [py, os.path.join(HERE, "oneshot_scale.py"), *sizes["oneshot_scale"]]))
    if "oneshot_quality" not in skip:
        cmd = [py, os.path.join(HERE, "oneshot_quality.py"), *sizes["oneshot_quality"]]
        for env, given, why in (("inc", args.inc_python, results["inc"]["skipped"]),
                                ("llmc", args.llmc_python, results["llmc"]["skipped"])):
            cmd += [f"--{env}-python", given] if given else ["--skipped", f"{env}={why}"]
        plan.append(("oneshot_quality", cmd))

    if "slim" not in skip:
        cmd = [py, os.path.join(HERE, "slim_speed.py"), *sizes["slim"]]
        cmd += ["--tp-python", args.tp_python] if args.tp_python else ["--tp-skipped", results["tp"]["skipped"]]
        plan.append(("slim_speed", cmd))

    if "distributed" not in skip:
        plan.append(("distributed_masks", [py, os.path.join(HERE, "distributed_masks.py"), *sizes["distributed"]]))

    path = os.path.join(HERE, "results", f"{run}.json")
    if args.merge and os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)
        kept = {k: v for k, v in earlier["benchmarks"].items() if k not in {name for name, _ in plan}}
        results["benchmarks"].update(kept)
        for env in ("inc", "llmc", "tp"):  # a reference not given now keeps the record of the run whose results stay
            if not results[env]["python"] and env in earlier:
                results[env] = earlier[env]
        results["merged"] = {"from": earlier.get("date"), "kept": sorted(kept),
                             "earlier_merges": earlier.get("merged")}

    for name, cmd in plan:
        r = run_child(name, cmd, log_dir)
        if name == "global_masks":
            path = os.path.join(out_dir, f"global_masks_{run}.json")
            r["results"] = json.load(open(path)) if r["returncode"] == 0 and os.path.exists(path) else []
        if name == "keras_vs_tfmot":
            path = os.path.join(out_dir, f"keras_vs_tfmot_{run}.json")
            r["results"] = json.load(open(path)) if r["returncode"] == 0 and os.path.exists(path) else None
        if r["returncode"]:
            print(f"!!! {name} failed (exit {r['returncode']}); see {r['log']}", flush=True)
            r["stdout"] = r["stdout"][-30:]
        results["benchmarks"][name] = r

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print(f"\nresults: {_rel(path)}", flush=True)
    if not args.no_report:
        subprocess.run([py, os.path.join(HERE, "report.py")], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
