"""One-shot pruning cost as a decoder grows: time and extra memory of each method, side by side in one run.

    python benchmarks/oneshot_scale.py [--sizes 256,512,1024] [--layers 4] [--samples 32] [--length 256]

For each width a Llama-style decoder (grouped-query attention, 4 blocks, random weights, float32) is built
once; each method prunes a fresh copy of it at 50 % (``1x1``) from the same calibration batches. Reported
as ratios, never bare times: the time of a run over the time of one dense forward pass of the model over
the calibration batches (measured beside it), and the memory a run adds over the process's resident set
before it (the kernel's peak-RSS mark, reset before each run) over the model's own size — beside what the
pipeline says it held at most (one block's inputs for every batch, one block's statistics).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

from _common import emit, peak, reset_peak  # noqa: E402

METHODS = {"magnitude": dict(pruning_type="magnitude", pruning_scope="local"),
           "wanda": dict(pruning_type="wanda"),
           "sparse_gpt": dict(pruning_type="sparse_gpt")}


def decoder(width: int, layers: int):
    import transformers
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=width, intermediate_size=int(width * 2.75) // 8 * 8, num_hidden_layers=layers,
            num_attention_heads=max(4, width // 64), num_key_value_heads=max(2, width // 128), vocab_size=4096,
            max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0))


def batches(samples: int, length: int, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4096, (samples, length), generator=g)
    return [{"input_ids": ids[i:i + batch]} for i in range(0, samples, batch)]


def forward_seconds(model, calib) -> float:
    with torch.no_grad():
        model(**calib[0])  # warm up
        start = time.perf_counter()
        for b in calib:
            model(**b)
    return time.perf_counter() - start


def run_one(width: int, method: str, args: argparse.Namespace) -> dict:
    """One method on one width, in this (fresh) process: the model is built and loaded before the peak is reset."""
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    calib = batches(args.samples, args.length)
    model = decoder(width, args.layers).eval()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    dense = forward_seconds(model, calib)
    config = WeightPruningConfig(pattern="1x1", target_sparsity=0.5, **METHODS[method])
    before = reset_peak()
    start = time.perf_counter()
    pruning = prepare_pruning(model, config, dataloader=calib)
    seconds = time.perf_counter() - start
    extra = peak() - before
    held = (pruning.calibration.activation_bytes + pruning.calibration.stats_bytes
            if pruning.calibration is not None else 0)
    return {"width": width, "layers": args.layers, "params": params, "method": method,
            "tokens": args.samples * args.length, "seconds": round(seconds, 3),
            "dense_forward_seconds": round(dense, 3), "time_ratio": seconds / dense, "model_bytes": model_bytes,
            "extra_bytes": extra, "extra_ratio": extra / model_bytes, "held_bytes": held,
            "sparsity": round(pruning.report().total_ratio, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024", help="decoder widths, comma-separated")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--one", nargs=2, metavar=("WIDTH", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.one:
        emit(run_one(int(args.one[0]), args.one[1], args))
        return
    from _common import collect
    for width in (int(s) for s in args.sizes.split(",")):
        for method in METHODS:  # each in a fresh process, so no run reuses memory another freed
            out = subprocess.run([sys.executable, __file__, "--one", str(width), method, "--layers", str(args.layers),
                                  "--samples", str(args.samples), "--length", str(args.length)],
                                 capture_output=True, text=True, check=True)
            r = collect(out.stdout)[0]
            print(f"width {width} ({r['params'] / 1e6:.1f}M params), {method}: x{r['time_ratio']:.1f} a dense forward "
                  f"over the calibration data; +{r['extra_bytes'] / 2**20:.0f} MiB = x{r['extra_ratio']:.2f} the "
                  f"model ({r['held_bytes'] / 2**20:.0f} MiB held by the pipeline)", flush=True)
            emit(r)


if __name__ == "__main__":
    main()
