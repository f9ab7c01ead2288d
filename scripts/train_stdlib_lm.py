"""Train the small causal language model the project prunes: ``models/stdlib-lm``.

    source scripts/env.sh && python scripts/train_stdlib_lm.py [--out models/stdlib-lm] [--steps 900]

Everything comes from text that ships with Python: the source files (``*.py``) of the Python 3.11
standard library (``sysconfig.get_paths()["stdlib"]``) without its tests, ``site-packages`` and the two
build-specific files (``_sysconfigdata_*.py``, ``config-3.11-*/``). Steps, each seeded:

1. Split the files by a hash of their relative path: ``int(sha256(path)[:8], 16) % 100 < 5`` is held
   out (about 5 %), the rest is training text. Each file becomes its text followed by ``<|eos|>``.
2. Train a byte-level BPE (``tokenizers``, 4,096 tokens with ``<|pad|>``, ``<|bos|>``, ``<|eos|>``) on
   the training files; save it as a transformers tokenizer.
3. Write ``heldout.txt.gz`` (the held-out files) and ``calib.txt`` (64 pieces of about 4 KiB from 64
   training files, 256 KiB), so evaluation never needs this Python installation again.
4. Train a ``LlamaForCausalLM`` (hidden 256, 4 layers, 4 heads with 2 key/value heads, MLP 688, tied
   embeddings) on non-overlapping 257-token blocks of the training stream in a seeded random order:
   AdamW, linear warm-up then cosine decay, 2 threads; float32 weights, optimizer state and loss, the
   forward pass under bfloat16 autocast (``--precision fp32`` for float32 throughout).
5. Save it (float32 safetensors), reload it from disk and measure held-out perplexity with
   ``benchmarks/lm_eval.py`` — with that of the untrained model and of a unigram model for comparison —
   and write ``README.md`` and ``training_log.json`` with the split, counts, settings, time and results.

The same machine and thread count give the same weights; another CPU or library build may change
float rounding, hence the last digits. The shipped folder, not a re-run, is the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import inspect
import json
import math
import os
import platform
import random
import sys
import sysconfig
import time
from typing import Dict, List, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402

import lm_eval  # noqa: E402

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"  # ids 0, 1, 2
#: directories whose files are tests or not the standard library's own source
EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
HELDOUT_PERCENT = 5
CALIB_PIECES, CALIB_PIECE_CHARS = 64, 4096


# ---- data -----------------------------------------------------------------------------------------
def excluded(rel: str) -> bool:
    parts = rel.split("/")
    return (any(p in EXCLUDED_DIRS for p in parts[:-1]) or parts[0].startswith("config-")
            or parts[-1].startswith("_sysconfigdata"))


def stdlib_files(stdlib: str) -> List[Tuple[str, str]]:
    """``(relative posix path, text)`` of every kept ``*.py`` file, sorted by path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, stdlib).replace(os.sep, "/")
            if excluded(rel):
                continue
            with open(full, "rb") as f:
                out.append((rel, f.read().decode("utf-8")))
    out.sort()
    return out


def is_heldout(rel: str) -> bool:
    return int(hashlib.sha256(rel.encode("utf-8")).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT


def joined(texts: Sequence[str]) -> str:
    """The format of every text file of the model folder: each document followed by ``<|eos|>``."""
    return "".join(t + EOS for t in texts)


def calibration_text(train: List[Tuple[str, str]], seed: int) -> Tuple[str, List[str]]:
    """``CALIB_PIECES`` pieces of whole lines, at least ``CALIB_PIECE_CHARS`` characters each, from as
    many training files (of at least twice that size) chosen with ``random.Random(seed)``, each piece
    starting at a random line."""
    rng = random.Random(seed)
    big = [(rel, text) for rel, text in train if len(text) >= 2 * CALIB_PIECE_CHARS]
    chosen = sorted(rng.sample(range(len(big)), CALIB_PIECES))
    pieces, names = [], []
    for i in chosen:
        rel, text = big[i]
        lines = text.splitlines(keepends=True)
        # start early enough that the rest of the file still holds a whole piece
        tail, last = 0, len(lines)
        while last > 0 and tail < CALIB_PIECE_CHARS:
            last -= 1
            tail += len(lines[last])
        start = rng.randrange(0, last + 1)
        piece, n = [], 0
        for line in lines[start:]:
            piece.append(line)
            n += len(line)
            if n >= CALIB_PIECE_CHARS:
                break
        pieces.append("".join(piece))
        names.append(f"{rel}:{start + 1}")
    return joined(pieces), names


def write_gz(path: str, text: str) -> None:
    """gzip without a name or time stamp in the header, so the same text gives the same bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
        f.write(text.encode("utf-8"))


# ---- tokenizer ------------------------------------------------------------------------------------
def train_tokenizer(texts: List[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=512, clean_up_tokenization_spaces=False)


def encode_stream(tokenizer, texts: List[str]) -> torch.Tensor:
    """All documents tokenised, each followed by ``<|eos|>``, as one int64 tensor."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: List[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


# ---- model ----------------------------------------------------------------------------------------
def make_config(tokenizer, args):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0)


def lr_at(step: int, args) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def blocks_in_order(stream: torch.Tensor, ctx: int, steps: int, batch: int, gen: torch.Generator):
    """Batches of ``batch`` non-overlapping ``ctx + 1``-token blocks of the stream, every block once per
    epoch in a seeded random order (a new order, and a new random shift of the block grid, each epoch)."""
    span = ctx + 1
    needed, out = steps * batch, []
    while len(out) < needed:
        shift = int(torch.randint(0, span, (1,), generator=gen))
        n_blocks = (len(stream) - shift) // span
        order = torch.randperm(n_blocks, generator=gen)
        out.extend((shift + order * span).tolist())
    starts = torch.tensor(out[:needed]).view(steps, batch)
    offsets = torch.arange(span)
    for s in range(steps):
        yield stream[starts[s, :, None] + offsets]


def unigram_perplexity(train_stream: torch.Tensor, heldout_ids: torch.Tensor, vocab: int, windows: int,
                       length: int) -> float:
    """Perplexity of add-one-smoothed training token frequencies on the tokens ``perplexity`` predicts."""
    counts = torch.bincount(train_stream, minlength=vocab).double() + 1
    logp = counts.log() - counts.sum().log()
    targets = lm_eval.windows_of(heldout_ids, windows, length)[:, 1:].reshape(-1)
    return math.exp(-float(logp[targets].mean()))


def folder_bytes(path: str) -> Dict[str, int]:
    return {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- main -----------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "stdlib-lm"))
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="bf16: forward pass under CPU bfloat16 autocast (float32 weights, optimizer and loss), "
                         "about twice as fast on CPUs with AVX-512 BF16; fp32: everything float32")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--eval-length", type=int, default=256)
    args = ap.parse_args(argv)
    if sys.version_info[:2] != (3, 11):
        print(f"warning: the shipped model was trained on Python 3.11's standard library, this is "
              f"{platform.python_version()}: the data (and so the result) will differ", file=sys.stderr)

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    # 1. data and split
    files = stdlib_files(args.stdlib)
    train = [(r, t) for r, t in files if not is_heldout(r)]
    heldout = [(r, t) for r, t in files if is_heldout(r)]
    train_texts = [t for _, t in train]
    heldout_text = joined([t for _, t in heldout])
    print(f"[data] {len(files)} files: {len(train)} train ({sum(map(len, train_texts)):,} chars), "
          f"{len(heldout)} held out ({len(heldout_text):,} chars)", flush=True)

    # 2. tokenizer
    t0 = time.time()
    tokenizer = train_tokenizer(train_texts, args.vocab)
    tokenizer.save_pretrained(args.out)
    # the class name transformers 4.x knows too; transformers 5 maps it to its tokenizers backend
    cfg_path = os.path.join(args.out, "tokenizer_config.json")
    with open(cfg_path) as f:
        tok_cfg = json.load(f)
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(cfg_path, "w") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")
    t_tok = time.time() - t0
    print(f"[tokenizer] {len(tokenizer)} tokens in {t_tok:.1f} s", flush=True)

    # 3. evaluation texts
    write_gz(os.path.join(args.out, lm_eval.HELDOUT_FILE), heldout_text)
    calib_text, calib_sources = calibration_text(train, args.seed)
    with open(os.path.join(args.out, lm_eval.CALIB_FILE), "w", encoding="utf-8", newline="") as f:
        f.write(calib_text)
    train_stream = encode_stream(tokenizer, train_texts)
    heldout_ids = lm_eval.token_ids(tokenizer, os.path.join(args.out, lm_eval.HELDOUT_FILE))
    calib_ids = lm_eval.token_ids(tokenizer, os.path.join(args.out, lm_eval.CALIB_FILE))
    assert torch.equal(heldout_ids, encode_stream(tokenizer, [t for _, t in heldout])), "held-out round trip"
    print(f"[tokens] train {len(train_stream):,}, held out {len(heldout_ids):,}, calibration "
          f"{len(calib_ids):,} ({len(calib_text):,} chars)", flush=True)

    # 4. model and training
    config = make_config(tokenizer, args)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    ppl_untrained = lm_eval.perplexity(model, tokenizer, args.windows, args.eval_length,
                                       text_path=os.path.join(args.out, lm_eval.HELDOUT_FILE))
    ppl_unigram = unigram_perplexity(train_stream, heldout_ids, len(tokenizer), args.windows, args.eval_length)
    print(f"[model] {n_params:,} parameters; held-out perplexity untrained {ppl_untrained:.1f}, "
          f"unigram {ppl_unigram:.1f}", flush=True)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    if args.precision == "bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    log: List[Dict] = []
    heldout_path = os.path.join(args.out, lm_eval.HELDOUT_FILE)
    t0 = time.time()
    model.train()
    running = 0.0
    for step, batch in enumerate(blocks_in_order(train_stream, args.ctx, args.steps, args.batch, gen)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        with autocast():
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        optimizer.step()
        running += loss.item()
        done = step + 1
        if done % 25 == 0 or done == args.steps:
            entry = {"step": done, "train_loss": round(running / (25 if done % 25 == 0 else done % 25), 4),
                     "lr": round(lr_at(step, args), 6), "grad_norm": round(grad_norm, 3),
                     "seconds": round(time.time() - t0, 1)}
            running = 0.0
            if done % args.eval_every == 0 or done == args.steps:
                entry["heldout_ppl"] = round(lm_eval.perplexity(model, tokenizer, args.windows, args.eval_length,
                                                                text_path=heldout_path), 3)
                model.train()
            log.append(entry)
            print(f"[train] " + " ".join(f"{k}={v}" for k, v in entry.items()), flush=True)
    t_train = time.time() - t0
    ppl_memory = log[-1]["heldout_ppl"]

    # 5. save, reload, evaluate
    model.eval()
    save_kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(
        model.save_pretrained).parameters else {}  # transformers 5 always writes safetensors
    model.save_pretrained(args.out, **save_kwargs)
    del model
    reloaded = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    ppl_dense = lm_eval.perplexity(reloaded, args.out, args.windows, args.eval_length)
    assert abs(ppl_dense - ppl_memory) < 1e-2 * ppl_memory, (ppl_dense, ppl_memory)
    t_total = time.time() - t_start
    print(f"[result] dense held-out perplexity {ppl_dense:.3f} after reloading (in memory {ppl_memory:.3f}); "
          f"training {t_train / 60:.1f} min, whole script {t_total / 60:.1f} min", flush=True)

    counts = {
        "files": {"kept": len(files), "train": len(train), "heldout": len(heldout)},
        "chars": {"train": sum(map(len, train_texts)), "heldout": sum(len(t) for _, t in heldout),
                  "calib": len(calib_text)},
        "tokens": {"train": len(train_stream), "heldout": len(heldout_ids), "calib": len(calib_ids)},
        "tokens_seen_in_training": args.steps * args.batch * args.ctx,
    }
    results = {"heldout_ppl": {"dense": round(ppl_dense, 3), "untrained": round(ppl_untrained, 3),
                               "unigram": round(ppl_unigram, 3)},
               "eval": {"windows": args.windows, "length": args.eval_length,
                        "predicted_tokens": args.windows * (args.eval_length - 1)},
               "seconds": {"tokenizer": round(t_tok, 1), "training": round(t_train, 1), "total": round(t_total, 1)}}
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "tokenizers": __import__("tokenizers").__version__, "cpu": lm_eval_cpu(), "threads": args.threads,
            "train_text_sha256": sha256_of(joined(train_texts)), "heldout_text_sha256": sha256_of(heldout_text),
            "heldout_files": [r for r, _ in heldout], "calib_pieces": calib_sources}
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("out", "stdlib")},
                   "counts": counts, "results": results, "n_params": n_params, "environment": info,
                   "log": log}, f, indent=1)
        f.write("\n")
    write_readme(args, counts, results, info, n_params, config)
    sizes = folder_bytes(args.out)
    total = sum(sizes.values())
    print("[files] " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()) + f"; total {total / 1e6:.2f} MB")
    assert total <= 20e6, f"model folder is {total / 1e6:.1f} MB, over 20 MB"


def lm_eval_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def write_readme(args, counts, results, info, n_params, config) -> None:
    c, t, r = counts, counts["tokens"], results
    precision_text = ("Weights, optimizer state and loss in float32, the forward pass under CPU bfloat16 autocast "
                      "(`--precision bf16`); evaluation is float32." if args.precision == "bf16"
                      else "Float32 throughout (`--precision fp32`).")
    ppl = r["heldout_ppl"]
    text = f"""# stdlib-lm: a small Llama trained on the Python standard library's source

The causal language model the project prunes to measure one-shot pruning quality (held-out perplexity of
the dense model against magnitude, Wanda, SparseGPT and OWL at 50 %, 2:4 and 70 %). Written by
`scripts/train_stdlib_lm.py` (seed {args.seed}); evaluated by `benchmarks/lm_eval.py`. It loads offline:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("models/stdlib-lm")      # float32
tokenizer = AutoTokenizer.from_pretrained("models/stdlib-lm")
```

## Held-out perplexity

| model | perplexity |
|---|---|
| this model, float32, reloaded from `model.safetensors` | **{ppl['dense']:.3f}** |
| unigram (add-one-smoothed training token frequencies) | {ppl['unigram']:.1f} |
| untrained (same architecture, seed {args.seed}) | {ppl['untrained']:.1f} |

Token level: {r['eval']['windows']} non-overlapping windows of {r['eval']['length']} tokens spread evenly
over the tokenised held-out text (window `i` starts at token `i * ((N - {r['eval']['length']}) // {r['eval']['windows'] - 1})`,
N = {t['heldout']:,}), each token predicted from the tokens before it in its window —
{r['eval']['predicted_tokens']:,} predictions — the same every time:
`python benchmarks/lm_eval.py` (`lm_eval.perplexity(model, "models/stdlib-lm")`).

## Data

The `*.py` files of the Python {info['python']} standard library (`sysconfig.get_paths()["stdlib"]`),
read as UTF-8, without the files under any directory named `test`, `tests` or `idle_test` (`test/`,
`idlelib/idle_test/`, `lib2to3/tests/`, `ctypes/test/`, `distutils/tests/`, `tkinter/test/`,
`unittest/test/`), `site-packages/`, and the two build-specific files `_sysconfigdata_*.py` and
`config-3.11-*/python-config.py`: {c['files']['kept']} files.

Split by path: a file is held out when `int(sha256(relative_path)[:8], 16) % 100 < {HELDOUT_PERCENT}`
(relative POSIX path, e.g. `email/utils.py`), otherwise it is training text.

| | files | characters | tokens |
|---|---|---|---|
| train | {c['files']['train']} | {c['chars']['train']:,} | {t['train']:,} |
| held out (`heldout.txt.gz`) | {c['files']['heldout']} | {c['chars']['heldout']:,} | {t['heldout']:,} |
| calibration (`calib.txt`, from train) | {len(info['calib_pieces'])} pieces | {c['chars']['calib']:,} | {t['calib']:,} |

Token counts include one `<|eos|>` per document. In both text files every document (a file, or a
calibration piece) is followed by `<|eos|>`, the tokenizer's end-of-text token, which it reads back as
that token. `calib.txt` is {len(info['calib_pieces'])} pieces of whole lines of at least
{CALIB_PIECE_CHARS:,} characters, one from each of {len(info['calib_pieces'])} training files of at least
{2 * CALIB_PIECE_CHARS:,} characters chosen with `random.Random({args.seed})`, each from a random line
(`training_log.json` lists them, and the held-out files). `lm_eval.calibration_batches("models/stdlib-lm")`
cuts 32 windows of 256 tokens from it, evenly spread, in 8 batches of 4.

## Tokenizer

Byte-level BPE trained with `tokenizers` {info['tokenizers']} on the training files: {config.vocab_size:,} tokens
(256 bytes, 3 special tokens, the rest merges; minimum pair frequency 2), GPT-2 pre-tokenisation without a prefix
space. Special tokens: `<|pad|>` = {config.pad_token_id}, `<|bos|>` = {config.bos_token_id}, `<|eos|>` = {config.eos_token_id};
nothing is added when encoding (no automatic BOS), as in training.

## Model

`LlamaForCausalLM`: hidden size {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} attention
heads of {config.hidden_size // config.num_attention_heads} with {config.num_key_value_heads} key/value heads (grouped-query attention),
SwiGLU MLP of {config.intermediate_size}, RMSNorm (eps {config.rms_norm_eps}), rotary embeddings (theta 10,000),
{config.max_position_embeddings} positions, vocabulary {config.vocab_size:,}, input and output embeddings tied, no biases:
{n_params:,} parameters, stored in float32 (`model.safetensors`).

## Training

{args.steps} steps of {args.batch} sequences x {args.ctx} tokens ({c['tokens_seen_in_training']:,} tokens,
{c['tokens_seen_in_training'] / t['train']:.2f} passes over the training tokens): non-overlapping {args.ctx + 1}-token blocks of
the training stream in a seeded random order. AdamW (betas 0.9/0.95, weight decay {args.weight_decay} on
matrices), peak learning rate {args.lr}, {args.warmup} warm-up steps then cosine decay to {args.min_lr_ratio * args.lr:g},
gradient clipping at {args.clip}, `torch.set_num_threads({args.threads})`, seed {args.seed}. {precision_text}
Loss and held-out perplexity along the way: `training_log.json`.

Time on {info['cpu']} with {args.threads} threads (a machine shared with other work): training
{r['seconds']['training'] / 60:.1f} min, the whole script {r['seconds']['total'] / 60:.1f} min (tokenizer
{r['seconds']['tokenizer']:.0f} s). torch {info['torch']}, transformers {info['transformers']}.

## Reproduce

```bash
source scripts/env.sh
python scripts/train_stdlib_lm.py          # rewrites models/stdlib-lm (Python 3.11 needed for the same data)
python benchmarks/lm_eval.py               # prints the held-out perplexity
```

The training text's SHA-256 (documents joined as above) is `{info['train_text_sha256']}`; another
3.11 patch release has other files and so other weights. On the same machine and thread count a re-run
gives the same weights; another CPU or library build can change float rounding. The shipped files, not a
re-run, are the reference: evaluation reads only this folder.
"""
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
