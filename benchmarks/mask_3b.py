"""A global 4x1 mask over a 3-billion-parameter model held in bfloat16, on one machine.

    python benchmarks/mask_3b.py [--layers 180] [--rows 4096] [--cols 4096] [--pattern 4x1] [--target 0.5]

The model's weights are built layer by layer from a seed (``torch.randn`` in bfloat16, each layer with
its own scale; the first two layers small enough that ``max_sparsity_ratio_per_op`` binds) and held in
memory: 180 x 4096 x 4096 = 3.02e9 parameters, 5.6 GiB. The scores are magnitudes, computed when the
engine reads a layer — ``compute_masks`` takes a mapping whose values only need ``shape`` and numpy
conversion, and reads one layer at a time — so no float copy of the model ever exists. The masks come
back as numpy booleans (one byte per weight, 2.8 GiB).

Reports the time, the peak RSS of the process, and what the call added beyond the weights and the
returned masks. Then checks exactness layer by layer (outside the timed part): exactly ``k`` blocks pruned,
no layer above its bound, and every pruned block scoring no higher than every kept block of the layers
whose bound does not bind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Mapping

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import emit, mib, peak, reset_peak, rss, units_of  # noqa: E402


class Magnitude:
    """``|w|`` of one bfloat16 weight as float32, made only when numpy asks for it."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.shape = tuple(weight.shape)

    def __array__(self, dtype=None, copy=None):
        a = self.weight.float().abs_().numpy()  # one float32 copy of the layer, made here
        return a if dtype is None else a.astype(dtype)


class Magnitudes(Mapping):
    """``{name: Magnitude}`` over a dict of weights: scores computed on access, never stored."""

    def __init__(self, weights) -> None:
        self.weights = weights

    def __getitem__(self, name):
        return Magnitude(self.weights[name])

    def __iter__(self):
        return iter(self.weights)

    def __len__(self):
        return len(self.weights)


def build(layers: int, rows: int, cols: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for i in range(layers):
        scale = 1e-3 if i < 2 else float(torch.empty(()).uniform_(0.5, 2.0, generator=g))
        w = torch.randn(rows, cols, generator=g, dtype=torch.bfloat16)
        weights[f"layer{i:03d}"] = w.mul_(scale)
    return weights


def check(weights, masks, pattern: str, k: int, hi: int):
    """Exactness, one layer at a time: count, bounds, and the threshold property."""
    a, b = (int(x) for x in pattern.split("x"))
    pruned_total, pruned_max, kept_min, binding = 0, -np.inf, np.inf, 0
    for name, w in weights.items():
        s = w.abs().float().numpy()
        rows, cols = s.shape
        blocks = s.reshape(rows // a, a, cols // b, b).mean(axis=(1, 3))
        pruned = ~masks[name].reshape(rows // a, a, cols // b, b).any(axis=(1, 3))
        if not np.array_equal(np.broadcast_to(pruned[:, None, :, None], (rows // a, a, cols // b, b)).reshape(rows, cols),
                              ~masks[name]):
            raise AssertionError(f"{name}: mask is not made of whole {pattern} blocks")
        c = int(pruned.sum())
        pruned_total += c
        if c > hi:
            raise AssertionError(f"{name}: {c} blocks pruned, bound {hi}")
        if c:
            pruned_max = max(pruned_max, float(blocks[pruned].max()))
        if c == hi:
            binding += 1
        elif c < blocks.size:
            kept_min = min(kept_min, float(blocks[~pruned].min()))
    return {"pruned_blocks": pruned_total, "k": k, "exact_k": pruned_total == k,
            "threshold_property": bool(pruned_max <= kept_min), "layers_at_bound": binding}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=180)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--pattern", default="4x1")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--max", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    from nc_prune import compute_masks

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    weights = build(args.layers, args.rows, args.cols, args.seed)
    build_s = time.perf_counter() - start
    params = args.layers * args.rows * args.cols
    weights_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    compute_masks({"w": np.ones((8, 8), np.float32)}, args.pattern, 0.5)  # warm-up
    base = reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = compute_masks(Magnitudes(weights), args.pattern, args.target, scope="global",
                              max_sparsity_ratio_per_op=args.max)
    seconds = time.perf_counter() - start
    top = peak()
    masks_bytes = sum(m.nbytes for m in masks.values())
    per, _ = units_of(args.pattern, args.rows, args.cols)
    k = int(np.floor(round(per * args.layers * args.target, 6)))
    hi = int(np.floor(round(per * args.max, 6)))
    result = {"params": params, "layers": args.layers, "shape": [args.rows, args.cols], "dtype": "bfloat16",
              "pattern": args.pattern, "target": args.target, "max_sparsity_ratio_per_op": args.max,
              "seconds": seconds, "build_seconds": build_s, "peak_rss_gib": round(top / 2**30, 2),
              "rss_before_gib": round(base / 2**30, 2), "weights_gib": round(weights_bytes / 2**30, 2),
              "masks_gib": round(masks_bytes / 2**30, 2), "extra_mib": mib(top - base - masks_bytes),
              "largest_layer_scores_mib": mib(args.rows * args.cols * 4), "rss_after_gib": round(rss() / 2**30, 2)}
    print(f"{params / 1e9:.2f}B parameters ({args.layers} x {args.rows}x{args.cols} bfloat16, "
          f"{result['weights_gib']} GiB): global {args.pattern} mask in {seconds:.1f} s; peak RSS "
          f"{result['peak_rss_gib']} GiB (weights {result['weights_gib']} + masks {result['masks_gib']} GiB + "
          f"{result['extra_mib']} MiB working memory)", flush=True)
    if not args.no_check:
        start = time.perf_counter()
        result.update(check(weights, masks, args.pattern, k, hi))
        result["check_seconds"] = time.perf_counter() - start
        print(f"exact k: {result['exact_k']} ({result['pruned_blocks']} of k={k}), pruned <= kept: "
              f"{result['threshold_property']}, layers at their bound: {result['layers_at_bound']}", flush=True)
    emit(result)


if __name__ == "__main__":
    main()
