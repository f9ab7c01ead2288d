"""global_unstructured on a 33.5M-parameter model: torch.nn.utils.prune against nc_prune.torch.prune.

Both run in the same process on identical copies of the model (best of ``--repeat`` runs each, the two
libraries alternating), and the masks are checked to be equal. Prints the wall times and the ratio, and
whether weights of equal magnitude straddled the cut — then nc_prune reproduces ``torch.topk``'s choice
among them by running ``torch.topk(sorted=False)`` itself, which costs about 0.9 s more at 33.5M.

    python benchmarks/torch_prune_global.py [--layers 8] [--width 2048] [--amount 0.5]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nc_prune.torch import prune as nc_prune_api


def _timed(lib, model: nn.Module, amount: float) -> float:
    params = [(m, "weight") for m in model if isinstance(m, nn.Linear)]
    start = time.perf_counter()
    lib.global_unstructured(params, pruning_method=lib.L1Unstructured, amount=amount)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = nn.Sequential(*[nn.Linear(args.width, args.width, bias=False) for _ in range(args.layers)])
    n = sum(p.numel() for p in model.parameters())
    times = {"torch": [], "ours": []}
    for _ in range(args.repeat):
        theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
        times["torch"].append(_timed(torch_prune, theirs, args.amount))
        times["ours"].append(_timed(nc_prune_api, ours, args.amount))
    t_torch, t_ours = min(times["torch"]), min(times["ours"])
    same = all(torch.equal(a.weight_mask, b.weight_mask) for a, b in zip(theirs, ours))
    pruned_max = max(float(m.weight_orig.detach().abs()[m.weight_mask == 0].max()) for m in ours)
    kept_min = min(float(m.weight_orig.detach().abs()[m.weight_mask == 1].min()) for m in ours)
    print(f"parameters: {n / 1e6:.1f}M   amount: {args.amount}   torch threads: {torch.get_num_threads()}   "
          f"ties across the cut: {'yes' if pruned_max == kept_min else 'no'}")
    print(f"torch.nn.utils.prune.global_unstructured : {t_torch:6.2f} s")
    print(f"nc_prune.torch.prune.global_unstructured : {t_ours:6.2f} s")
    print(f"ratio (torch / nc_prune)                 : {t_torch / t_ours:6.1f}x   same masks: {same}")


if __name__ == "__main__":
    main()
