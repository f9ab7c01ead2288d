"""One-shot SparseGPT / Wanda with llm-compressor's ``oneshot`` on a transformers causal LM — run with its python.

    PY=$(bash benchmarks/oneshot_refs/envs.sh)
    $PY benchmarks/oneshot_refs/llmc_oneshot.py MODEL_DIR CALIB.json|.npz OUT_DIR \
        --method sparse_gpt|wanda --pattern 1x1|2:4 --sparsity 0.5 [--batch-size 1] [--threads N]

Loads MODEL_DIR with ``AutoModelForCausalLM.from_pretrained``, runs
``llmcompressor.oneshot(model=model, recipe=SparseGPTModifier(...) | WandaPruningModifier(...),
dataset=DataLoader(batches))`` and writes ``OUT_DIR/model`` (``save_pretrained(save_compressed=False)``:
plain dense safetensors with their zeros, loadable by transformers without compressed-tensors) and
``OUT_DIR/result.json`` with the same fields as ``inc_sparsegpt.py``. Never imports nc_prune.

The calibration batches are handed over as a ``torch.utils.data.DataLoader`` that yields exactly the same
``{"input_ids": (bs, len)}`` batches as the INC driver gets (``oneshot`` uses a DataLoader as it is: no
tokenizing, shuffling, truncation or sample limit). The modifiers are configured to match INC and
nc_prune: ``mask_structure`` ``"0:0"`` for ``1x1`` and ``"2:4"`` (2 pruned of every 4) for 2:4,
SparseGPT's ``block_size=128, dampening_frac=0.01``, and ``ignore=["re:.*lm_head"]`` (llm-compressor
prunes ``lm_head`` unless told not to; ``--prune-lm-head`` keeps its default). The pipeline is
llm-compressor's default (``independent``, which picks ``sequential`` over the model's
``_no_split_modules`` decoder layers: each layer is calibrated, pruned, then run again to feed the next).

How llm-compressor selects weights: SparseGPT ``1x1`` prunes, per 128-column block, the ``sparsity``
fraction of the whole block with the smallest ``w²/[H⁻¹]ᵢᵢ²`` (all rows together, as INC); Wanda ``1x1``
prunes ``floor(in × sparsity)`` weights in every output row by ``|W|·‖x‖₂``; ``N:M`` prunes the N smallest
of every M consecutive inputs of a row in both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import types
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
    p.add_argument("--method", required=True, choices=["sparse_gpt", "wanda"])
    p.add_argument("--pattern", required=True, choices=["1x1", "2:4"], help="2:4 = 2 pruned of every 4")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity (0.5 for 2:4)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per calibration batch (2-D input)")
    p.add_argument("--block-size", type=int, default=128, help="SparseGPT block_size")
    p.add_argument("--dampening-frac", type=float, default=0.01, help="SparseGPT dampening_frac")
    p.add_argument("--pipeline", default=None, help="llm-compressor pipeline (default: its own choice)")
    p.add_argument("--prune-lm-head", action="store_true", help="do not add re:.*lm_head to ignore")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--no-save", action="store_true", help="write result.json only")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with Timer() as t_import, contextlib.redirect_stdout(sys.stderr):  # its import-time logs too
        import torch
        import transformers
        import compressed_tensors
        import llmcompressor
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
        from loguru import logger
    # llm-compressor logs to stdout; move it to stderr so stdout carries only the JSON summary line
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("LLM_COMPRESSOR_LOG_LEVEL", "INFO"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if ":" in args.pattern:
        n, m = (int(x) for x in args.pattern.split(":"))
        if abs(args.sparsity - n / m) > 1e-9:
            raise SystemExit(f"pattern {args.pattern} prunes {n} of {m}: --sparsity must be {n / m}")
    mask_structure = args.pattern if ":" in args.pattern else "0:0"

    notes = []
    ids = load_input_ids(args.calib)
    batches = make_batches(ids, args.batch_size, torch)
    calib = calib_summary(batches)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)

    with Timer() as t_load:
        dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)
        model.eval()
        try:  # oneshot insists on a processor when given data, though a DataLoader never uses it
            processor = transformers.AutoTokenizer.from_pretrained(args.model_dir)
        except Exception as e:  # noqa: BLE001 - the tiny test models ship no tokenizer
            processor = types.SimpleNamespace()
            notes.append(f"no tokenizer in model_dir ({type(e).__name__}); a placeholder processor was passed")
    rss_loaded = rss()

    ignore = [] if args.prune_lm_head else ["re:.*lm_head"]
    common = dict(sparsity=args.sparsity, mask_structure=mask_structure, ignore=ignore)
    if args.method == "sparse_gpt":
        modifier = SparseGPTModifier(block_size=args.block_size, dampening_frac=args.dampening_frac, **common)
    else:
        modifier = WandaPruningModifier(**common)
    kwargs = {} if args.pipeline is None else {"pipeline": args.pipeline}

    peak_reset = reset_peak()
    with Timer() as t_prune, contextlib.redirect_stdout(sys.stderr):
        model = oneshot(model=model, processor=processor, recipe=modifier, dataset=loader, output_dir=None,
                        **kwargs)
    peak_prune = hwm()

    layers = layer_sparsity(model, torch, args.pattern)
    with Timer() as t_save:
        if not args.no_save:
            model.save_pretrained(os.path.join(args.out_dir, "model"), save_compressed=False)
    result = {
        "system": "llmcompressor", "method": args.method, "pattern": args.pattern,
        "target_sparsity": args.sparsity, "device": "cpu", "dtype": args.dtype, "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "llmcompressor": llmcompressor.__version__,
                     "compressed_tensors": compressed_tensors.__version__,
                     "numpy": __import__("numpy").__version__},
        "machine": machine(),
        "model_dir": os.path.abspath(args.model_dir), "calib": os.path.abspath(args.calib), "calibration": calib,
        "llmcompressor": {"modifier": type(modifier).__name__,
                          "modifier_args": {k: v for k, v in json.loads(modifier.model_dump_json(exclude_none=True)).items()
                                            if not k.endswith("_")},
                          "pipeline": args.pipeline or "default (independent -> sequential)"},
        "shims": notes,
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
    print(json.dumps({k: result[k] for k in ("system", "method", "pattern", "target_sparsity", "time_s",
                                             "memory_mib")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
