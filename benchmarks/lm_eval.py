"""Held-out perplexity and calibration batches for the shipped language model ``models/stdlib-lm``.

    python benchmarks/lm_eval.py [--model models/stdlib-lm] [--windows 64] [--length 256]

prints the dense model's held-out perplexity (and, with ``--untrained``, that of a freshly initialised
model of the same architecture, seed 0).

The model (``scripts/train_stdlib_lm.py`` wrote it; see ``models/stdlib-lm/README.md``) is a 4-layer
Llama trained on the Python 3.11 standard library's source. Its folder carries everything evaluation
needs, so nothing here reads the local Python installation or the network:

* ``heldout.txt.gz`` — the held-out source files, joined by the end-of-text token ``<|eos|>``;
* ``calib.txt`` — 256 KiB of pieces of *training* files, in the same format, for calibration;
* the tokenizer (``tokenizer.json``), the config and ``model.safetensors``.

Both functions are deterministic: the windows are fixed by the text, ``windows`` and ``length`` alone —
``windows`` non-overlapping windows of ``length`` tokens spread evenly over the tokenised text (the
first starts at token 0, the last ends at or just before the end), so they sample all of the held-out
files, not only the first few. Typical use from another benchmark::

    from lm_eval import MODEL_DIR, calibration_batches, load_model, perplexity
    model = load_model()                                     # float32, eval mode
    dense = perplexity(model, MODEL_DIR)
    calib = calibration_batches(MODEL_DIR)                   # 8 batches of {"input_ids": (4, 256)}
    prepare_pruning(model, config, dataloader=calib)         # then perplexity(model, MODEL_DIR) again
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: the shipped model's folder
MODEL_DIR = os.path.join(ROOT, "models", "stdlib-lm")
HELDOUT_FILE = "heldout.txt.gz"
CALIB_FILE = "calib.txt"

_TOKEN_CACHE: Dict[Tuple[str, str, int], torch.Tensor] = {}


def load_tokenizer(tokenizer_dir_or_tokenizer=MODEL_DIR):
    """The tokenizer itself if one is given, else ``AutoTokenizer.from_pretrained`` of the folder."""
    if isinstance(tokenizer_dir_or_tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.fspath(tokenizer_dir_or_tokenizer))
    return tokenizer_dir_or_tokenizer


def load_model(model_dir: str = MODEL_DIR, dtype: torch.dtype = torch.float32):
    """``AutoModelForCausalLM.from_pretrained(model_dir)`` in ``dtype`` (float32 by default), eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return model.eval()


def read_text(path: str) -> str:
    """A text file of the model folder, gunzipped if its name ends in ``.gz``."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def _folder_of(tokenizer_dir_or_tokenizer, tokenizer) -> str:
    if isinstance(tokenizer_dir_or_tokenizer, (str, os.PathLike)):
        return os.fspath(tokenizer_dir_or_tokenizer)
    folder = getattr(tokenizer, "name_or_path", "") or ""
    return folder if os.path.isdir(folder) else MODEL_DIR


def token_ids(tokenizer, text_path: str) -> torch.Tensor:
    """The whole text file tokenised, without added special tokens (``<|eos|>`` in it becomes its id).

    Cached per (file, tokenizer name, vocabulary size): repeated evaluations tokenise once."""
    key = (os.path.abspath(text_path), str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key not in _TOKEN_CACHE:
        text = read_text(text_path)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer directly: no "longer than max length" warning
            ids = backend.encode(text, add_special_tokens=False).ids
        else:
            ids = tokenizer.encode(text, add_special_tokens=False)
        _TOKEN_CACHE[key] = torch.tensor(ids, dtype=torch.long)
    return _TOKEN_CACHE[key]


def window_starts(n_tokens: int, windows: int, length: int) -> List[int]:
    """Start offsets of ``windows`` non-overlapping windows of ``length`` tokens spread evenly over
    ``n_tokens``: ``i * ((n_tokens - length) // (windows - 1))``."""
    if windows < 1 or length < 2:
        raise ValueError(f"need windows >= 1 and length >= 2, got windows={windows}, length={length}")
    if n_tokens < windows * length:
        raise ValueError(f"the text has {n_tokens} tokens, fewer than {windows} windows x {length}")
    if windows == 1:
        return [0]
    stride = (n_tokens - length) // (windows - 1)
    return [i * stride for i in range(windows)]


def windows_of(ids: torch.Tensor, windows: int, length: int) -> torch.Tensor:
    """``(windows, length)`` tensor of the evenly spread windows of a token sequence."""
    return torch.stack([ids[s:s + length] for s in window_starts(len(ids), windows, length)])


@torch.no_grad()
def perplexity(model, tokenizer_dir_or_tokenizer=MODEL_DIR, windows: int = 64, length: int = 256, *,
               batch_size: int = 8, text_path: Optional[str] = None) -> float:
    """Token-level perplexity of a causal LM on the held-out text: ``exp`` of the mean negative
    log-likelihood of every token of every window given the tokens before it in that window
    (``windows * (length - 1)`` predictions; 64 x 255 = 16,320 by default).

    ``tokenizer_dir_or_tokenizer`` is the model folder (its tokenizer and ``heldout.txt.gz`` are used) or a
    tokenizer object (its ``name_or_path`` folder's held-out text is used, else the shipped model's);
    ``text_path`` overrides the text file. The model runs in eval mode, on its own device and dtype, in
    batches of ``batch_size`` windows (keep it fixed when comparing: other shapes may change the last
    digits); log-likelihoods are taken in float32 and summed in float64. The model's training mode is
    restored afterwards.
    """
    tokenizer = load_tokenizer(tokenizer_dir_or_tokenizer)
    if text_path is None:
        text_path = os.path.join(_folder_of(tokenizer_dir_or_tokenizer, tokenizer), HELDOUT_FILE)
    x = windows_of(token_ids(tokenizer, text_path), windows, length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for b in range(0, len(x), batch_size):
            xb = x[b:b + batch_size].to(device)
            logits = model(input_ids=xb, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), xb[:, 1:].reshape(-1), reduction="sum")
            nll += float(loss.double())
            count += xb[:, 1:].numel()
    finally:
        model.train(was_training)
    return math.exp(nll / count)


def calibration_batches(model_dir: str = MODEL_DIR, n: int = 32, length: int = 256, batch_size: int = 4,
                        seed: Optional[int] = None) -> List[Dict[str, torch.Tensor]]:
    """``n`` calibration sequences of ``length`` tokens from ``calib.txt`` (training text, never held-out) in
    batches ``{"input_ids": LongTensor(b, length)}`` — what ``prepare_pruning(..., dataloader=...)`` takes:
    :func:`nc_prune.torch.batches.text_batches`, evenly spread or, with ``seed``, at random positions. The
    defaults give 8 batches of 4 x 256 (8,192 tokens); calib.txt holds about 77,000 tokens."""
    from nc_prune.torch.batches import text_batches

    return text_batches(load_tokenizer(model_dir), read_text(os.path.join(os.fspath(model_dir), CALIB_FILE)),
                        n, length, batch_size, seed)


def untrained_model(model_dir: str = MODEL_DIR, seed: int = 0):
    """A freshly initialised model of the folder's architecture (``torch.manual_seed(seed)``), eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).eval()


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=MODEL_DIR)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--untrained", action="store_true", help="also the perplexity of an untrained model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    ppl = perplexity(model, args.model, args.windows, args.length)
    print(f"{os.path.relpath(args.model)}: {n_params:,} parameters, held-out perplexity {ppl:.3f} "
          f"({args.windows} windows x {args.length} tokens, float32)")
    if args.untrained:
        ppl0 = perplexity(untrained_model(args.model), args.model, args.windows, args.length)
        print(f"untrained (seed 0): held-out perplexity {ppl0:.3f}")


if __name__ == "__main__":
    main()
