"""Global mask generation: nc_prune against INC 2.6 on the same scores, at several model sizes.

    python benchmarks/global_masks.py --layers 48 --sizes 256,512,1024 --patterns 4x1,2:4,1x1 \
        [--inc-python benchmarks/.envs/inc/bin/python] [--out results.json]

For each pattern and size: a child process writes tie-free random float32 scores for ``layers`` square
layers (``_common.tie_free_scores``; three layers hold the lowest scores, so the per-layer maximum binds),
then nc_prune (``compute_masks``, global scope) and INC (``inc_masks.py``, in INC's environment) each run
in their own child process on those files. Every child reports its time (best of ``--repeat``) and the
memory its first run added beyond the scores and the returned masks (peak RSS minus RSS before the call
minus the masks' bytes). The parent checks the exactness claims: nc_prune prunes exactly ``k`` units
within the bounds, the same number per layer as INC (whose rule is a full sort: ``kthvalue`` over the
concatenation), and the same mask element for element. Without INC, the counts are checked against a
full sort done here instead.

    python benchmarks/global_masks.py ours SCORES_DIR --pattern 4x1 --target 0.5 --max 0.9
runs only the nc_prune side on saved scores (what the suite runs in a child).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # _common, and this checkout's nc_prune

import numpy as np  # noqa: E402

from _common import collect, digest, emit, mib, peak, reset_peak, tie_free_scores, units_of  # noqa: E402

#: target and per-layer maximum per pattern: half the units (a quarter of the weights for 2:4), and a
#: maximum the three low-scored layers would exceed
SETTINGS = {"4x1": (0.5, 0.9), "1x1": (0.5, 0.9), "2:4": (0.25, 0.4)}


def generate(out_dir: str, pattern: str, layers: int, size: int, seed: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, s in tie_free_scores(pattern, layers, size, size, seed=seed).items():
        np.save(os.path.join(out_dir, name + ".npy"), s)


def load(scores_dir: str) -> Dict[str, np.ndarray]:
    files = sorted(f for f in os.listdir(scores_dir) if f.endswith(".npy"))
    return {f[:-4]: np.load(os.path.join(scores_dir, f)) for f in files}


def run_ours(scores_dir: str, pattern: str, target: float, max_ratio: float, repeat: int) -> Dict:
    """Time ``compute_masks`` on saved scores; memory from the first run."""
    import warnings

    from nc_prune import compute_masks
    scores = load(scores_dir)
    with warnings.catch_warnings():  # warm-up on a tiny model: first-call costs are not the method's
        warnings.simplefilter("ignore")
        compute_masks({n: s[:8, :8] for n, s in list(scores.items())[:2]}, pattern, target)
    times, extra, masks = [], None, None
    for _ in range(repeat):
        masks = None
        base = reset_peak()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks = compute_masks(scores, pattern, target, scope="global", max_sparsity_ratio_per_op=max_ratio)
        times.append(time.perf_counter() - start)
        if extra is None:
            extra = peak() - base - sum(m.nbytes for m in masks.values())
    rows, cols = next(iter(scores.values())).shape
    _, unit = units_of(pattern, rows, cols)
    return {"impl": "nc_prune", "pattern": pattern, "seconds": min(times), "runs": len(times),
            "extra_mib": mib(extra), "largest_layer_scores_mib": mib(max(s.nbytes for s in scores.values())),
            "all_scores_mib": mib(sum(s.nbytes for s in scores.values())),
            "pruned_units": {n: int((~m).sum()) // unit for n, m in masks.items()},
            "digests": {n: digest(m) for n, m in masks.items()}}


def expected_counts(scores_dir: str, pattern: str, target: float, max_ratio: float) -> Dict[str, int]:
    """Pruned units per layer by a full sort of every unit score (the reference rule, max bound only)."""
    scores = load(scores_dir)
    names = list(scores)
    rows, cols = scores[names[0]].shape
    per, unit = units_of(pattern, rows, cols)
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        units = [np.sort(s.reshape(-1, m), axis=1)[:, :n].mean(axis=1) for s in scores.values()]
        scale = m / n
    else:
        a, b = (int(x) for x in pattern.split("x"))
        units = [s.reshape(rows // a, a, cols // b, b).mean(axis=(1, 3)).reshape(-1) for s in scores.values()]
        scale = 1.0
    k = int(np.floor(round(per * len(names) * min(1.0, target * scale), 6)))
    hi = int(np.floor(round(per * min(1.0, max_ratio * scale), 6)))
    flat = np.concatenate(units)
    layer = np.repeat(np.arange(len(names)), per)
    order = np.argsort(flat, kind="stable")
    rank_in_layer = np.empty_like(order)
    for l in range(len(names)):  # position of each unit within its own layer's order
        own = order[layer[order] == l]
        rank_in_layer[own] = np.arange(own.size)
    allowed = order[rank_in_layer[order] < hi]  # global order, skipping what a layer may not prune
    counts = np.bincount(layer[allowed[:k]], minlength=len(names))
    return {n: int(c) for n, c in zip(names, counts)}


def _child(cmd: List[str], env: Optional[Dict[str, str]] = None) -> Dict:
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    results = collect(run.stdout)
    if len(results) != 1:
        raise RuntimeError(f"{' '.join(cmd)} printed no result:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return results[0]


def compare(args) -> List[Dict]:
    rows = []
    work = os.path.join(args.work, "scores")
    for pattern in args.patterns.split(","):
        target, max_ratio = SETTINGS[pattern]
        for size in (int(s) for s in args.sizes.split(",")):
            shutil.rmtree(work, ignore_errors=True)
            gen = [sys.executable, __file__, "gen", work, "--pattern", pattern, "--layers", str(args.layers),
                   "--size", str(size), "--seed", str(args.seed)]
            subprocess.run(gen, check=True)
            common = [work, "--pattern", pattern, "--target", str(target), "--max", str(max_ratio)]
            ours = _child([sys.executable, __file__, "ours", *common, "--repeat", str(args.repeat)])
            theirs = None
            if args.inc_python:
                theirs = _child([args.inc_python, os.path.join(HERE, "inc_masks.py"), *common,
                                 "--repeat", str(args.repeat)])
                reference = theirs["pruned_units"]
            else:
                reference = expected_counts(work, pattern, target, max_ratio)
            per, _ = units_of(pattern, size, size)
            scale = 2.0 if ":" in pattern else 1.0
            k = int(np.floor(round(per * args.layers * min(1.0, target * scale), 6)))
            row = {"pattern": pattern, "layers": args.layers, "size": size, "params": args.layers * size * size,
                   "target": target, "max_sparsity_ratio_per_op": max_ratio, "k": k, "ours": ours, "inc": theirs,
                   "pruned_total": sum(ours["pruned_units"].values()),
                   "counts_equal_reference": ours["pruned_units"] == reference,
                   "reference": "inc" if theirs else "full sort"}
            row["exact_k"] = row["pruned_total"] == k
            if theirs:
                row["masks_equal"] = ours["digests"] == theirs["digests"]
                row["ratio"] = theirs["seconds"] / ours["seconds"]
            for side in ("ours", "inc"):
                if row[side]:
                    row[side].pop("digests")
            bound = int(np.floor(round(per * min(1.0, max_ratio * scale), 6)))
            row["bound_binds"] = sum(c == bound for c in ours["pruned_units"].values())
            rows.append(row)
            _print_row(row)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _print_row(row: Dict) -> None:
    ours, inc = row["ours"], row["inc"]
    line = (f"{row['pattern']:>4} {row['layers']}x{row['size']}^2 ({row['params'] / 1e6:.1f}M): "
            f"nc_prune {ours['seconds']:.2f} s +{ours['extra_mib']} MiB")
    if inc:
        line += (f" | INC {inc['seconds']:.2f} s +{inc['extra_mib']} MiB | {row['ratio']:.1f}x faster, "
                 f"same masks: {row['masks_equal']}")
    line += f" | exact k: {row['exact_k']}, counts = {row['reference']}: {row['counts_equal_reference']}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--pattern", required=True)
    g.add_argument("--layers", type=int, required=True)
    g.add_argument("--size", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    o = sub.add_parser("ours")
    o.add_argument("dir")
    o.add_argument("--pattern", required=True)
    o.add_argument("--target", type=float, required=True)
    o.add_argument("--max", type=float, default=0.98)
    o.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--patterns", default="4x1,2:4,1x1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inc-python", default=None, help="INC 2.6 environment's python; without it, no INC column")
    parser.add_argument("--work", default=os.path.join(HERE, "out"))
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.mode == "gen":
        generate(args.dir, args.pattern, args.layers, args.size, args.seed)
    elif args.mode == "ours":
        emit(run_ours(args.dir, args.pattern, args.target, args.max, args.repeat))
    else:
        rows = compare(args)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
