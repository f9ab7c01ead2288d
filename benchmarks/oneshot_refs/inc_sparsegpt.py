"""One-shot SparseGPT with Intel Neural Compressor 2.6 on a transformers causal LM — run with INC's python.

    PY=$(bash scripts/inc_env.sh)
    $PY benchmarks/oneshot_refs/inc_sparsegpt.py MODEL_DIR CALIB.json|.npz OUT_DIR \
        --pattern 1x1|2:4 --sparsity 0.5 [--batch-size 1] [--device cpu] [--threads N]

Loads MODEL_DIR with ``AutoModelForCausalLM.from_pretrained``, prunes it with INC's own
``prepare_pruning(model, WeightPruningConfig(pruning_type="sparse_gpt", ...), dataloader=batches,
device=...)`` and writes ``OUT_DIR/model`` (``save_pretrained``: plain dense weights with their zeros) and
``OUT_DIR/result.json`` (times, memory, per-layer sparsity, what INC found). Never imports nc_prune.

How INC 2.6 runs it (``neural_compressor/compression/pruner/pruning.py: SparseGPTPruning``):

* the block list is the *first* ``nn.ModuleList`` met in a depth-first walk of the model
  (``utils.get_layers``): ``model.layers`` of Llama;
* the layers it prunes are every ``Linear``/``Conv`` whose name matches ``op_names`` (``.*``) minus the
  classifier head it detects (``lm_head``) — and of those only the ones whose name contains ``.<i>.`` for a
  block index ``i``: anything outside the blocks is silently left dense;
* the block inputs are captured by replacing block 0's ``forward`` and running ``model(**batch)`` for every
  batch; positional arguments are kept from the first batch only and keyword arguments per batch (hence
  the need for equal-length batches: nothing pads or checks them);
* each block runs once with ``forward_pre`` hooks accumulating ``H = 2/n Σ X Xᵀ`` (n counts sequences),
  every hooked layer is pruned with ``blocksize=128, percdamp=0.01`` (hard-coded: ``parameters`` cannot
  change them), and the block runs again to feed the next one;
* ``1x1``: in each 128-column block the ``sparsity`` fraction of the *whole block* (all rows together)
  with the smallest ``w²/[H⁻¹]ᵢᵢ²`` is pruned (``<=`` the threshold, so ties prune more); ``N:M``: the N
  smallest of every M consecutive input weights of a row are pruned (N pruned of M).

Three shims make INC 2.6 (written for transformers < 4.54) run on transformers 4.57; each is reported in
``result.json["shims"]`` and none changes INC's algorithm:

1. decoder layers now return a tensor, and INC keeps ``layer(...)[0]`` as the next block's input — the
   first *sample* of the batch, which fails in block 1 (``apply_rotary_pos_emb`` size mismatch). Each
   block's ``forward`` is wrapped to return a 1-tuple while INC runs, and unwrapped before saving;
2. ``use_cache`` is switched off while INC runs: otherwise the ``DynamicCache`` made for each batch is kept
   among the captured keyword arguments and every block call appends its keys/values to it, so the second
   pass (and later blocks) would attend over stale, unpruned keys;
3. a ``config.json`` written by transformers 5 keeps RoPE's base in ``rope_parameters``, which 4.57
   ignores (silently falling back to ``rope_theta=10000``): it is copied into ``rope_theta`` /
   ``rope_scaling`` before the model is built.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _refcommon import (  # noqa: E402
    Timer, calib_summary, hwm, layer_sparsity, load_input_ids, machine, make_batches, mib, pruned_names,
    reset_peak, rss, ru_maxrss, write_json)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("calib", help=".json ({'input_ids': [[...]]}) or .npz (input_ids), equal-length rows")
    p.add_argument("out_dir")
    p.add_argument("--pattern", required=True, choices=["1x1", "2:4"], help="INC pattern (2:4 = 2 pruned of 4)")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity (0.5 for 2:4)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per calibration batch (2-D input)")
    p.add_argument("--device", default="cpu", help="INC's device= argument (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--no-save", action="store_true", help="write result.json only")
    return p.parse_args(argv)


def _load_config(model_dir, transformers, shims):
    """AutoConfig, with RoPE settings from a transformers-5 ``rope_parameters`` carried over (shim 3)."""
    config = transformers.AutoConfig.from_pretrained(model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    rp = raw.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp and "rope_theta" not in raw:
        config.rope_theta = float(rp["rope_theta"])
        rtype = rp.get("rope_type", "default")
        if rtype != "default":
            config.rope_scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
        shims.append(f"rope_parameters {rp} -> rope_theta={config.rope_theta}"
                     + (f", rope_scaling={config.rope_scaling}" if rtype != "default" else ""))
    return config


def _wrap_blocks_as_tuples(layers, shims):
    """Shim 1: make each block return a tuple, as INC 2.6 indexes ``layer(...)[0]``."""
    wrapped = []
    for layer in layers:
        orig = layer.forward

        def forward(*args, __orig=orig, **kwargs):
            out = __orig(*args, **kwargs)
            return out if isinstance(out, tuple) else (out,)

        layer.forward = forward
        wrapped.append(layer)
    shims.append(f"{len(wrapped)} blocks' forward wrapped to return a 1-tuple during pruning")
    return wrapped


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    with Timer() as t_import:
        import torch
        import transformers
        import neural_compressor
        from neural_compressor.compression.pruner import prepare_pruning
        from neural_compressor.compression.pruner.utils import get_layers
        from neural_compressor.training import WeightPruningConfig
    if args.threads:
        torch.set_num_threads(args.threads)
    if ":" in args.pattern:
        n, m = (int(x) for x in args.pattern.split(":"))
        if abs(args.sparsity - n / m) > 1e-9:
            raise SystemExit(f"pattern {args.pattern} prunes {n} of {m}: --sparsity must be {n / m}")
    logging.getLogger("neural_compressor").setLevel(logging.WARNING)

    shims = []
    ids = load_input_ids(args.calib)
    batches = make_batches(ids, args.batch_size, torch)
    calib = calib_summary(batches)

    with Timer() as t_load:
        config = _load_config(args.model_dir, transformers, shims)
        dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, config=config, dtype=dtype)
        model.eval()
    rss_loaded = rss()

    # What INC will see: its block list and (below) the modules its pruner hooks.
    blocks = get_layers(model)
    blocks_name = next((n for n, mod in model.named_modules() if mod is blocks), None)
    wrapped = _wrap_blocks_as_tuples(blocks, shims)
    use_cache = getattr(model.config, "use_cache", None)
    if use_cache:
        model.config.use_cache = False
        shims.append("config.use_cache=False during pruning (restored before saving)")

    cfg = WeightPruningConfig(pruning_type="sparse_gpt", pattern=args.pattern, target_sparsity=args.sparsity)
    peak_reset = reset_peak()
    with Timer() as t_prune:
        pruning = prepare_pruning(model, cfg, dataloader=batches, device=args.device)
    peak_prune = hwm()

    for layer in wrapped:
        del layer.forward  # back to the class's forward
    if use_cache:
        model.config.use_cache = use_cache
    pruner = pruning.pruners[0]
    inc_modules = list(pruner.modules.keys())
    excluded = list(pruner.config.get("excluded_op_names", []))

    layers = layer_sparsity(model, torch, args.pattern)
    with Timer() as t_save:
        if not args.no_save:
            model.save_pretrained(os.path.join(args.out_dir, "model"))
    # the per-block index INC uses to pick each block's layers (pruning.py: '.' + str(i) + '.')
    in_blocks = [n for n in inc_modules if any(f".{i}." in n for i in range(len(blocks)))]
    result = {
        "system": "inc", "method": "sparse_gpt", "pattern": args.pattern, "target_sparsity": args.sparsity,
        "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "neural_compressor": neural_compressor.__version__, "numpy": __import__("numpy").__version__},
        "machine": machine(),
        "model_dir": os.path.abspath(args.model_dir), "calib": os.path.abspath(args.calib), "calibration": calib,
        "inc": {"blocks": blocks_name, "num_blocks": len(blocks), "modules": inc_modules,
                "modules_in_blocks": in_blocks, "modules_outside_blocks_not_pruned":
                    sorted(set(inc_modules) - set(in_blocks)), "excluded_op_names": excluded,
                "blocksize": 128, "percdamp": 0.01},
        "shims": shims,
        "time_s": {"import": round(t_import.seconds, 3), "load": round(t_load.seconds, 3),
                   "prune": round(t_prune.seconds, 3), "save": round(t_save.seconds, 3)},
        "memory_mib": {"rss_after_load": mib(rss_loaded),
                       "peak_during_prune": mib(peak_prune) if peak_reset else None,
                       "extra_during_prune": mib(peak_prune - rss_loaded) if peak_reset else None,
                       "ru_maxrss_process": mib(ru_maxrss())},
        "pruned_layers": pruned_names(layers), "layers": layers,
        "output_model": None if args.no_save else os.path.abspath(os.path.join(args.out_dir, "model")),
    }
    write_json(os.path.join(args.out_dir, "result.json"), result)
    print(json.dumps({k: result[k] for k in ("system", "pattern", "target_sparsity", "time_s", "memory_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
