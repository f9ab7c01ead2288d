"""INC 2.6's global mask generation on scores saved by ``global_masks.py`` — run with INC's python.

    benchmarks/.envs/inc/bin/python benchmarks/inc_masks.py SCORES_DIR --pattern 4x1 --target 0.5 --max 0.9

Drives INC the way its pruners do (read from ``neural_compressor/compression/pruner``): the config goes
through INC's ``process_config``, the pattern comes from INC's ``get_pattern`` over modules of the layers'
shapes (built on the ``meta`` device, so they cost no memory), NxM element scores are reduced with the
pattern's ``reduce_score`` as INC's criteria do every step (N:M patterns reduce inside ``get_masks``),
and ``get_masks(scores, target, pre_masks)`` runs with all-ones boolean pre-masks, as on a first pruning
step. The timed part is the reduction plus ``get_masks``; a fresh pattern object is made for every run,
and runs stop early once one takes longer than ``--max-seconds``.
Prints one ``RESULT`` line: best time, peak extra memory of the first run, per-layer pruned units and
mask fingerprints.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import digest, emit, mib, peak, reset_peak, units_of  # noqa: E402


def _masks(pattern, args, scores, torch, pre=None):
    """What an INC pruner does at a pruning step: reduce NxM scores (its criterion), then get_masks."""
    if pre is None:
        pre = {n: torch.ones(s.shape, dtype=torch.bool) for n, s in scores.items()}
    with torch.no_grad():
        inc_scores = scores if ":" in args.pattern else {n: pattern.reduce_score(s, n) for n, s in scores.items()}
        return pattern.get_masks(inc_scores, args.target, pre)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores_dir")
    parser.add_argument("--pattern", required=True)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--max", type=float, default=0.98)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="no further runs after one this slow")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    import torch
    from neural_compressor import WeightPruningConfig
    from neural_compressor.compression.pruner.patterns import get_pattern
    from neural_compressor.compression.pruner.utils import process_config
    logging.disable(logging.WARNING)  # INC logs a line per layer per call
    torch.set_num_threads(os.cpu_count() or 1)

    files = sorted(glob.glob(os.path.join(args.scores_dir, "*.npy")))
    scores = {os.path.basename(f)[:-4]: torch.from_numpy(np.load(f)) for f in files}
    # INC's default pruning_configs=[{}] is one dict shared by every config: pass every key explicitly
    group = dict(pattern=args.pattern, target_sparsity=args.target, pruning_type="magnitude",
                 pruning_scope="global", max_sparsity_ratio_per_op=args.max, min_sparsity_ratio_per_op=0.0)
    conf = process_config(WeightPruningConfig(pruning_configs=[group], **group))[0]
    modules = {n: torch.nn.Linear(s.shape[1], s.shape[0], bias=False, device="meta") for n, s in scores.items()}

    tiny = {n: s[:8, :8].clone() for n, s in list(scores.items())[:2]}  # warm-up: first-call costs aside
    _masks(get_pattern(conf, {n: modules[n] for n in tiny}), args, tiny, torch)
    times, extra, masks = [], None, None
    for _ in range(args.repeat):
        pattern = get_pattern(conf, modules)
        pre = {n: torch.ones(s.shape, dtype=torch.bool) for n, s in scores.items()}
        base = reset_peak()
        start = time.perf_counter()
        masks = _masks(pattern, args, scores, torch, pre)
        times.append(time.perf_counter() - start)
        if extra is None:
            out_bytes = sum(m.numel() * m.element_size() for m in masks.values())
            extra = peak() - base - out_bytes
        del pattern
        if times[-1] > args.max_seconds:  # slow enough that one more run would not change the ratio much
            break
    rows, cols = next(iter(scores.values())).shape
    _, unit = units_of(args.pattern, rows, cols)
    pruned = {n: int((~masks[n].bool()).sum()) // unit for n in scores}
    emit({"impl": "inc", "pattern": args.pattern, "seconds": min(times), "runs": len(times),
          "extra_mib": mib(extra), "pruned_units": pruned,
          "digests": {n: digest(masks[n].bool().numpy()) for n in scores},
          "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
