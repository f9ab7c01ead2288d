"""Structured one-shot quality on the shipped LM: heads and FFN channels removed without retraining.

Prunes 25 % (``--fraction``) of the KV head groups (with their query heads) and of the FFN channels of
``models/stdlib-lm`` with ``magnitude``, ``snip`` and ``retrain_free`` (with and without its weight fix),
slims the result and prints the held-out perplexity per calibration seed. The figures in
docs/structured.md come from ``PYTHONPATH=. python benchmarks/retrain_free_lm.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_eval  # noqa: E402

from nc_prune import WeightPruningConfig  # noqa: E402
from nc_prune.torch import model_slim, prepare_pruning  # noqa: E402

RUNS = [("magnitude", "magnitude", {}), ("snip", "snip", {}),
        ("retrain_free (no fix)", "retrain_free", {"weight_fix": "none"}), ("retrain_free", "retrain_free", {})]


def config(ptype: str, fraction: float, params: dict) -> WeightPruningConfig:
    return WeightPruningConfig([
        {"pruning_type": ptype, "pattern": "mha", "target_sparsity": fraction, "op_names": ["self_attn"],
         "parameters": dict(params)},
        {"pruning_type": ptype, "pattern": "channelx1", "target_sparsity": fraction, "op_names": ["down_proj"],
         "parameters": dict(params)}])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--windows", type=int, default=32, help="held-out windows of 256 tokens")
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = lm_eval.load_model()
    print(f"dense perplexity {lm_eval.perplexity(base, windows=args.windows):.3f}", flush=True)
    for seed in map(int, args.seeds.split(",")):
        calib = lm_eval.calibration_batches(n=32, length=128, batch_size=4, seed=seed)
        batches = [dict(b, labels=b["input_ids"]) for b in calib]  # the model's own loss for gradient scores
        for label, ptype, params in RUNS:
            if ptype == "magnitude" and seed != int(args.seeds.split(",")[0]):
                continue  # no data: the same result at every seed
            model = copy.deepcopy(base)
            start = time.perf_counter()
            prepare_pruning(model, config(ptype, args.fraction, params), dataloader=batches)
            seconds = time.perf_counter() - start
            report = model_slim(model)
            print(f"seed {seed} {label}: perplexity {lm_eval.perplexity(model, windows=args.windows):.3f} "
                  f"({seconds:.1f} s; removed {report.removed}; params {report.params_before:,} -> "
                  f"{report.params_after:,})", flush=True)


if __name__ == "__main__":
    main()
