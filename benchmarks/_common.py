"""What every benchmark script shares: memory probes, result lines, machine facts, tie-free scores.

Imports numpy and the standard library only, so the INC driver (which runs in INC's own environment with
numpy<2) can use it too.

Memory is read from ``/proc/self/status``: ``reset_peak()`` clears the kernel's high-water mark
(``VmHWM``, via ``/proc/self/clear_refs``), so ``peak_since_reset() - rss_at_reset`` is what one call
added on top of what the process already held — the figure the docs report as "extra memory".
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Dict, List, Tuple

import numpy as np

RESULT_PREFIX = "RESULT "


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


def rss() -> int:
    """Resident set size of this process, bytes."""
    return _status("VmRSS")


def reset_peak() -> int:
    """Reset the peak-RSS mark to the current RSS; returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss()


def peak() -> int:
    """Peak RSS since the last :func:`reset_peak` (or since the start), bytes."""
    return _status("VmHWM")


def emit(result: Dict) -> None:
    """Print one result as a tagged JSON line; the suite's runner collects these from stdout."""
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)


def collect(stdout: str) -> List[Dict]:
    return [json.loads(line[len(RESULT_PREFIX):]) for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram_gib": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f}",
            "python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()}


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# ---- tie-free scores ------------------------------------------------------------------------------
def units_of(pattern: str, rows: int, cols: int) -> Tuple[int, int]:
    """(units per layer, weights per unit) for ``AxB`` blocks or ``N:M`` groups of a rows x cols weight."""
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        return rows * (cols // m), n
    a, b = (int(x) for x in pattern.split("x"))
    return (rows // a) * (cols // b), a * b


def tie_free_scores(pattern: str, layers: int, rows: int, cols: int, weak: int = 3,
                    seed: int = 0) -> Dict[str, np.ndarray]:
    """Random float32 scores whose unit scores are all distinct and exact under any summation order.

    Every unit gets its own value (float32 bit patterns ``1.0 + 16 r`` for a random rank ``r``: distinct,
    and with four zero low bits, so the mean of up to four copies is exact in torch and numpy alike).
    ``AxB`` blocks hold A*B copies of it; an ``N:M`` group holds N copies (its N lowest, at random
    positions) and M-N copies of twice the value. The first ``weak`` layers get the lowest ranks, so the
    global order would prune them entirely and ``max_sparsity_ratio_per_op`` has to hold them back.
    So INC (which prunes every score ``<=`` its threshold) and nc_prune must agree on every mask element.
    """
    per_layer, _ = units_of(pattern, rows, cols)
    total = per_layer * layers
    if total * 16 + 0x3F800000 >= 0x7F800000:
        raise ValueError(f"{total} units do not fit in distinct finite float32 values")
    rng = np.random.default_rng(seed)
    n_weak = per_layer * min(weak, layers)
    ranks = np.empty(total, dtype=np.int64)
    ranks[:n_weak] = rng.permutation(n_weak)
    ranks[n_weak:] = n_weak + rng.permutation(total - n_weak)
    out = {}
    for i in range(layers):
        r = ranks[i * per_layer:(i + 1) * per_layer]
        v = (np.uint32(0x3F800000) + (r * 16).astype(np.uint32)).view(np.float32)
        out[f"layer{i:02d}"] = _expand(pattern, v, rows, cols, rng)
    return out


def _expand(pattern: str, v: np.ndarray, rows: int, cols: int, rng) -> np.ndarray:
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        groups = v.size
        # each group: n copies of v at random positions, m - n copies of 2v
        order = np.argsort(rng.random((groups, m)), axis=1)
        low = order < n
        g = np.where(low, v[:, None], v[:, None] * np.float32(2))
        return g.reshape(rows, cols).astype(np.float32)
    a, b = (int(x) for x in pattern.split("x"))
    blocks = v.reshape(rows // a, 1, cols // b, 1)
    return np.ascontiguousarray(np.broadcast_to(blocks, (rows // a, a, cols // b, b)).reshape(rows, cols))


def digest(mask: np.ndarray) -> str:
    """Short fingerprint of a boolean mask (row-major), equal exactly when the masks are equal."""
    import hashlib
    return hashlib.sha1(np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes()).hexdigest()[:16]
