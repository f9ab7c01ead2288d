"""Structured pruning, measured for real: latency and size of dense vs slimmed models, beside Torch-Pruning.

    python benchmarks/slim_speed.py [--quick] [--tp-python PATH] [--rounds N]

Cases (``benchmarks/slim_models.py`` builds them, seeded, random weights, eval mode):

* a BERT-base-shaped encoder and a Llama-style decoder (grouped-query attention) with 25 % and 50 % of the
  attention heads (Llama: whole KV groups) and of the FFN channels removed in every layer;
* ResNet-50 with 50 % of the channels of every convolution removed (residual channels included).

nc_prune prunes each dense copy one-shot by magnitude (``pruning_scope="local"``, so every layer loses the
same share, as Torch-Pruning's uniform ratio does) and slims it with ``model_slim``; the slimmed model's output
is checked against the masked model's. Torch-Pruning (``--tp-python``, its own environment from
``benchmarks/tp_env.sh``) loads the same dense weights in ``benchmarks/tp_driver.py``, removes the same
share with its ``MetaPruner`` (L2 magnitude importance) and saves its pruned model; this process loads it.

Then the dense, nc_prune and Torch-Pruning models are timed here, in one process, on the same inputs, in
interleaved rounds (each round runs every model once, in rotating order) and the medians are compared:
speedup = dense time / slimmed time, and nc_prune's time over Torch-Pruning's. Parameters are counted in
the layers that can lose units (the Linear layers of a transformers model — embeddings and norms keep the
hidden size — and the whole CNN) and in the whole model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import slim_models as sm  # noqa: E402
from _common import emit  # noqa: E402

# kind -> (shape, batch, size) per run size
SHAPES = {
    "full": {"bert": (sm.Shape(12), 8, 128), "llama": (sm.Shape(8), 4, 128), "resnet50": (sm.Shape(4), 8, 224)},
    "quick": {"bert": (sm.Shape(2, 0.5), 4, 64), "llama": (sm.Shape(2, 0.5), 2, 64),
              "resnet50": (sm.Shape(1, 0.5), 2, 64)},
}
CASES = [("bert", 0.25), ("bert", 0.5), ("llama", 0.25), ("llama", 0.5), ("resnet50", 0.5)]


def nc_prune_slim(kind: str, dense: torch.nn.Module, fraction: float, x: Any):
    """nc_prune's side: magnitude one-shot on heads + FFN channels (or conv filters), then model_slim.

    Returns the slimmed model, the slim report and the largest output difference to the masked model."""
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import model_slim, prepare_pruning

    model = copy.deepcopy(dense)
    if kind == "resnet50":
        config = WeightPruningConfig(pruning_type="magnitude", pattern="1xchannel", target_sparsity=fraction,
                                     pruning_scope="local", op_names=["conv|downsample"],
                                     parameters={"coupled": True})
    else:
        ffn = [r"\d\.output\.dense"] if kind == "bert" else ["down_proj"]
        if kind == "llama":  # a decoder without its LM head: the last down_proj is the model's last Linear, which
            ffn.append(rf"^layers\.{len(dense.layers) - 1}\.mlp\.down_proj$")  # is left dense unless named so
        config = WeightPruningConfig([{"op_names": ["attention|self_attn"], "pattern": "mha"},
                                      {"op_names": ffn, "pattern": "channelx1"}],
                                     pruning_type="magnitude", target_sparsity=fraction, pruning_scope="local")
    prepare_pruning(model, config, dataloader=[x])
    with torch.no_grad():
        masked = sm.forward(model, x)
    report = model_slim(model)
    with torch.no_grad():
        diff = float((sm.forward(model, x) - masked).abs().max())
    return model.eval(), report, diff


def tp_slim(tp_python: str, kind: str, shape: sm.Shape, fraction: float, dense: torch.nn.Module, x: Any,
            work: str) -> Dict[str, Any]:
    """Torch-Pruning's side, in its own environment: returns its pruned model and what it says."""
    state = os.path.join(work, f"{kind}_dense.pt")
    if not os.path.exists(state):
        torch.save(dense.state_dict(), state)
    out = os.path.join(work, f"{kind}_{fraction}_tp.pt")
    cmd = [tp_python, os.path.join(HERE, "tp_driver.py"), "--kind", kind, "--layers", str(shape.layers),
           "--scale", str(shape.scale), "--fraction", str(fraction), "--state", state, "--out", out,
           "--batch", "2", "--size", str(32 if kind != "resnet50" else 64)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": HERE})
    if proc.returncode:
        raise RuntimeError(f"Torch-Pruning driver failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["model"] = torch.load(out, weights_only=False).eval()
    return info


def time_models(models: Dict[str, torch.nn.Module], x: Any, rounds: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds of one forward per model, timed in interleaved rounds in rotating order."""
    names = list(models)
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                sm.forward(models[n], x)
        times: Dict[str, List[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t = time.perf_counter()
                sm.forward(models[n], x)
                times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def run_case(kind: str, fraction: float, run: str, rounds: int, tp_python: Optional[str], work: str,
             skipped: Optional[str]) -> Dict[str, Any]:
    shape, batch, size = SHAPES[run][kind]
    dense = sm.build(kind, shape, seed=0)
    x = sm.inputs(kind, batch, size)
    start = time.perf_counter()
    ours, report, diff = nc_prune_slim(kind, dense, fraction, x)
    nc_seconds = time.perf_counter() - start
    models = {"dense": dense, "nc_prune": ours}
    result: Dict[str, Any] = {
        "kind": kind, "fraction": fraction, "layers": shape.layers, "scale": shape.scale, "batch": batch,
        "size": size, "threads": torch.get_num_threads(), "rounds": rounds,
        "params": {"dense": sm.params(dense), "nc_prune": sm.params(ours)},
        "block_params": {"dense": sm.block_params(dense), "nc_prune": sm.block_params(ours)},
        "removed": dict(report.removed), "output_diff": diff, "prune_seconds": {"nc_prune": round(nc_seconds, 2)},
        "tp": None, "tp_skipped": skipped}
    if tp_python:
        try:
            info = tp_slim(tp_python, kind, shape, fraction, dense, x, work)
        except RuntimeError as e:  # recorded, the case still reports nc_prune against dense
            result["tp_skipped"] = str(e).splitlines()[0]
            print(e, file=sys.stderr, flush=True)
        else:
            tp_model = info.pop("model")
            models["torch_pruning"] = tp_model
            result["params"]["torch_pruning"] = sm.params(tp_model)
            result["block_params"]["torch_pruning"] = sm.block_params(tp_model)
            result["prune_seconds"]["torch_pruning"] = info.get("seconds")
            result["tp"] = info
    times = time_models(models, x, rounds)
    result["seconds"] = times
    result["speedup"] = {n: times["dense"] / t for n, t in times.items() if n != "dense"}
    result["removed_share"] = {n: 1 - result["block_params"][n] / result["block_params"]["dense"]
                               for n in models if n != "dense"}
    if "torch_pruning" in times:
        result["nc_over_tp"] = times["nc_prune"] / times["torch_pruning"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, for a smoke run")
    parser.add_argument("--tp-python", default=None, help="python of the Torch-Pruning environment")
    parser.add_argument("--tp-skipped", default=None, help="why Torch-Pruning is not part of this run")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 15, quick 5)")
    parser.add_argument("--cases", default=None, help="comma-separated kind:fraction, e.g. bert:0.25,resnet50:0.5")
    args = parser.parse_args()
    run = "quick" if args.quick else "full"
    rounds = args.rounds or (5 if args.quick else 15)
    cases = CASES if not args.cases else [(c.split(":")[0], float(c.split(":")[1])) for c in args.cases.split(",")]
    skipped = None if args.tp_python else (args.tp_skipped or "no Torch-Pruning environment given")
    with tempfile.TemporaryDirectory() as work:
        for kind, fraction in cases:
            r = run_case(kind, fraction, run, rounds, args.tp_python, work, skipped)
            tp = (f", Torch-Pruning x{r['speedup']['torch_pruning']:.2f} ({100 * r['removed_share']['torch_pruning']:.1f} %"
                  f" removed), nc/TP time x{r['nc_over_tp']:.2f}") if "torch_pruning" in r["speedup"] else ""
            print(f"{kind} at {fraction:.0%}: nc_prune x{r['speedup']['nc_prune']:.2f} faster than dense, "
                  f"{100 * r['removed_share']['nc_prune']:.1f} % of block params removed, output diff "
                  f"{r['output_diff']:.1e}{tp}", flush=True)
            emit(r)


if __name__ == "__main__":
    main()
