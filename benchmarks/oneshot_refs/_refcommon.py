"""What the one-shot reference drivers share: calibration input, memory and time probes, sparsity reports.

Imported by ``inc_sparsegpt.py`` (INC 2.6's environment: numpy<2, transformers 4.57) and ``llmc_oneshot.py``
(llm-compressor's environment: numpy 2, transformers 5.x), so it needs only the standard library, numpy and
torch, and never imports nc_prune.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Dict, List

import numpy as np


# ---- calibration data ------------------------------------------------------------------------------
def load_input_ids(path: str) -> np.ndarray:
    """Calibration token ids from ``.json`` or ``.npz``, as an int64 array.

    JSON: ``{"input_ids": [[...], ...]}`` or a bare list of lists. NPZ: an ``input_ids`` array (or the
    only array in the file). 2-D ``(samples, seq_len)`` is batched with ``--batch-size``; 3-D
    ``(batches, batch_size, seq_len)`` is taken as the batches themselves. All rows must have one length
    (INC 2.6 mishandles batches of different lengths, so the drivers refuse them).
    """
    if path.endswith(".npz"):
        with np.load(path) as z:
            key = "input_ids" if "input_ids" in z.files else (z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise SystemExit(f"{path}: no 'input_ids' array (has {z.files})")
            ids = np.asarray(z[key])
    else:
        with open(path) as f:
            obj = json.load(f)
        if isinstance(obj, dict):
            if "input_ids" not in obj:
                raise SystemExit(f"{path}: JSON object without an 'input_ids' key (has {sorted(obj)})")
            obj = obj["input_ids"]
        try:
            ids = np.asarray(obj)
        except ValueError as e:  # ragged lists
            raise SystemExit(f"{path}: calibration sequences must all have the same length ({e})")
        if ids.dtype == object:
            raise SystemExit(f"{path}: calibration sequences must all have the same length")
    if ids.ndim not in (2, 3) or ids.size == 0:
        raise SystemExit(f"{path}: input_ids must be a non-empty 2-D (samples, len) or 3-D (batches, bs, len) "
                         f"array, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise SystemExit(f"{path}: input_ids must be integers, got {ids.dtype}")
    return ids.astype(np.int64)


def make_batches(ids: np.ndarray, batch_size: int, torch) -> List[Dict]:
    """A list of ``{"input_ids": LongTensor(bs, len)}`` — what a tokenizer-backed dataloader yields."""
    if ids.ndim == 3:
        return [{"input_ids": torch.from_numpy(np.ascontiguousarray(b))} for b in ids]
    if batch_size < 1:
        raise SystemExit("--batch-size must be >= 1")
    return [{"input_ids": torch.from_numpy(np.ascontiguousarray(ids[i:i + batch_size]))}
            for i in range(0, ids.shape[0], batch_size)]


def calib_summary(batches: List[Dict]) -> Dict:
    shapes = [tuple(b["input_ids"].shape) for b in batches]
    return {"batches": len(batches), "samples": int(sum(s[0] for s in shapes)),
            "seq_len": int(shapes[0][1]), "tokens": int(sum(s[0] * s[1] for s in shapes)),
            "batch_sizes": sorted({int(s[0]) for s in shapes})}


# ---- memory and time -------------------------------------------------------------------------------
def _status(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def rss() -> int:
    """Current resident set size, bytes (-1 where /proc is missing)."""
    return _status("VmRSS")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm() -> int:
    """Peak RSS since the last :func:`reset_peak` (or the start), bytes."""
    return _status("VmHWM")


def ru_maxrss() -> int:
    """Peak RSS of the whole process from ``resource.getrusage`` (Linux reports KiB), bytes.

    Not affected by :func:`reset_peak`: this is the process's lifetime peak, model load included.
    """
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def mib(n: float) -> float:
    return round(n / 2**20, 1) if n >= 0 else -1.0


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


# ---- sparsity ---------------------------------------------------------------------------------------
def layer_sparsity(model, torch, pattern: str) -> Dict[str, Dict]:
    """Per ``nn.Linear`` (every one, pruned or not): zeros, fraction, per-row extremes, N:M conformance.

    For ``N:M`` (N pruned of every M consecutive input weights of a row, INC's and llm-compressor's
    meaning) ``nm_groups_exact`` is the fraction of groups with exactly N zeros and ``nm_groups_at_least``
    the fraction with at least N.
    """
    out = {}
    nm = tuple(int(x) for x in pattern.split(":")) if ":" in pattern else None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        w = mod.weight.detach()
        z = (w == 0)
        rows = z.float().mean(dim=1)
        rec = {"shape": list(w.shape), "zeros": int(z.sum()), "numel": int(w.numel()),
               "sparsity": round(float(z.float().mean()), 6),
               "row_sparsity_min": round(float(rows.min()), 6), "row_sparsity_max": round(float(rows.max()), 6)}
        if nm is not None:
            n, m = nm
            if w.shape[1] % m == 0:
                g = z.reshape(w.shape[0], -1, m).sum(-1)
                rec["nm_groups_exact"] = round(float((g == n).float().mean()), 6)
                rec["nm_groups_at_least"] = round(float((g >= n).float().mean()), 6)
            else:
                rec["nm_groups_exact"] = rec["nm_groups_at_least"] = None
        out[name] = rec
    return out


def pruned_names(layers: Dict[str, Dict], threshold: float = 0.05) -> List[str]:
    """Layers that are visibly sparse (random dense weights are never exactly 0 in float)."""
    return [n for n, r in layers.items() if r["sparsity"] > threshold]


def write_json(path: str, obj: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def machine() -> Dict:
    import platform
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cores": os.cpu_count()}
