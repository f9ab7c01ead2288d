"""What pruning adds to a PyTorch training step: after the schedule, while scores update, and on mask steps.

    python benchmarks/train_overhead.py [--model mlp|transformer|all] [--rounds 15] [--steps 10]

Two identical copies of a model train side by side in one process (SGD with momentum, synthetic data):
one plain, one with ``nc_prune.torch.prepare_pruning`` attached (``snip_momentum``, ``4x1``, 80 %, a
schedule of 20 steps pruning every 5). Once the schedule is over, blocks of ``--steps`` steps alternate
between the two (which goes first alternates too) for ``--rounds`` rounds; the overhead is the ratio of
the median pruned block to the median plain block, with the ratio of the fastest blocks beside it. The
hooks alone are timed too (pre- and post-step, called directly): their cost per step in ms and as a share
of the plain step is the figure least disturbed by other load on the machine. An A/A comparison (the
plain model against an identical plain copy, same alternation) shows how much the machine's noise alone
moves the ratio.

Two more rows measure steps inside a schedule, against the plain model in the same alternation: steps
that only update ``snip_momentum`` scores (score <- 0.9 score + |w * grad|), and steps that recompute
every mask (``pruning_frequency=1``). Where a GPU is available, one mask update of a CUDA copy is timed too
(``gpu_mask_update_ms``; None and "no GPU available" in the printed line otherwise).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import emit  # noqa: E402


def mlp() -> nn.Module:
    """8.4M parameters: 1024 -> 2048 -> 2048 -> 1024 -> 10, batch 256."""
    return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, 10))


class Encoder(nn.Module):
    """3.2M parameters: 4 transformer encoder layers (d=256, 4 heads, ffn 1024), batch 16 x 64 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(64, 256)
        layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


MODELS = {"mlp": (mlp, lambda g: torch.randn(256, 1024, generator=g)),
          "transformer": (Encoder, lambda g: torch.randn(16, 64, 64, generator=g))}


def config(start: int, end: int, frequency: int):
    from nc_prune import WeightPruningConfig
    return WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.8,
                               start_step=start, end_step=end, pruning_frequency=frequency)


class Trainer:
    """One model, its optimizer, and a fixed set of batches."""

    def __init__(self, model: nn.Module, batches) -> None:
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.batches = batches
        self.i = 0
        self.loss = nn.CrossEntropyLoss()

    def steps(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(x), y).backward()
            self.opt.step()
        return (time.perf_counter() - start) / n


def alternate(a: Callable[[int], float], b: Callable[[int], float], rounds: int, steps: int):
    """Per-step seconds of ``a`` and ``b`` over alternating blocks (order flips every round)."""
    ta, tb = [], []
    for r in range(rounds):
        if r % 2:
            tb.append(b(steps))
            ta.append(a(steps))
        else:
            ta.append(a(steps))
            tb.append(b(steps))
    return ta, tb


def summary(plain: List[float], pruned: List[float]) -> Dict:
    return {"plain_ms": statistics.median(plain) * 1e3, "pruned_ms": statistics.median(pruned) * 1e3,
            "ratio": statistics.median(pruned) / statistics.median(plain), "ratio_best": min(pruned) / min(plain),
            "blocks": len(plain)}


def hook_cost(pruning, optimizer, n: int = 50) -> float:
    """Seconds per step spent in the pruning hooks (best of 5 batches of ``n`` calls)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            pruning._pre_step(optimizer, (), {})
            pruning._post_step(optimizer, (), {})
        best = min(best, (time.perf_counter() - start) / n)
    return best


def run(name: str, rounds: int, steps: int, seed: int) -> Dict:
    from nc_prune.torch import prepare_pruning
    build, make_x = MODELS[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    base_model = build()
    batches = []
    for _ in range(4):
        x = make_x(g)
        batches.append((x, torch.randint(0, 10, (x.shape[0],), generator=g)))
    plain = Trainer(copy.deepcopy(base_model), batches)
    pruned = Trainer(copy.deepcopy(base_model), batches)
    pruning = prepare_pruning(pruned.model, config(0, 20, 5), pruned.opt)
    plain.steps(25)
    pruned.steps(25)  # the schedule (steps 0..20) is over after these
    report = pruning.report()
    result = {"model": name, "params": sum(p.numel() for p in base_model.parameters()),
              "pruned_params": sum(t.weight.numel() for p in pruning.pruners for t in p.modules.values()),
              "sparsity": round(report.total_ratio, 4),
              "torch_threads": torch.get_num_threads()}
    result["after_schedule"] = summary(*alternate(plain.steps, pruned.steps, rounds, steps))
    twin = Trainer(copy.deepcopy(base_model), batches)  # A/A: how far two identical plain copies disagree
    twin.steps(25)
    result["noise_aa"] = summary(*alternate(plain.steps, twin.steps, max(rounds // 3, 3), steps))
    hooks = hook_cost(pruning, pruned.opt)
    result["hooks_ms"] = hooks * 1e3
    result["hooks_share"] = hooks / (result["after_schedule"]["plain_ms"] / 1e3)

    scoring = Trainer(copy.deepcopy(base_model), batches)  # in the window, no mask step: scores only
    prepare_pruning(scoring.model, config(0, 10**9, 10**9), scoring.opt)
    scoring.steps(2)
    result["score_steps"] = summary(*alternate(plain.steps, scoring.steps, max(rounds // 3, 3), steps))

    masking = Trainer(copy.deepcopy(base_model), batches)  # every step recomputes every mask
    prepare_pruning(masking.model, config(0, 10**9, 1), masking.opt)
    masking.steps(2)
    result["mask_steps"] = summary(*alternate(plain.steps, masking.steps, max(rounds // 3, 3), steps))
    result["gpu_mask_update_ms"] = gpu_mask_update(build, make_x, batches)
    return result


def gpu_mask_update(build, make_x, batches):
    """Milliseconds of one mask update of every layer on a CUDA copy of the model (best of 5), or None without
    a GPU (the printed line says so)."""
    if not torch.cuda.is_available():
        return None
    from nc_prune.torch import prepare_pruning
    model = build().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruning = prepare_pruning(model, config(0, 10**9, 10**9), opt)
    x, y = batches[0]
    opt.zero_grad()
    nn.CrossEntropyLoss()(model(x.cuda()), y.cuda()).backward()
    opt.step()
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for p in pruning.pruners:
            p.update_masks(p.global_step)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all", choices=["all", *MODELS])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine a descheduled thread stalls "
                             "every parallel op of the other, which swamps a few-percent difference)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in MODELS if args.model == "all" else [args.model]:
        r = run(name, args.rounds, args.steps, args.seed)
        a = r["after_schedule"]
        print(f"{name} ({r['params'] / 1e6:.1f}M params, {r['pruned_params'] / 1e6:.1f}M pruned): plain step "
              f"{a['plain_ms']:.1f} ms; with pruning after the schedule x{a['ratio']:.3f} (fastest blocks "
              f"x{a['ratio_best']:.3f}; A/A x{r['noise_aa']['ratio']:.3f}); hooks {r['hooks_ms']:.2f} ms/step = "
              f"{100 * r['hooks_share']:.1f} %; "
              f"score-update steps x{r['score_steps']['ratio']:.2f}; mask steps x{r['mask_steps']['ratio']:.2f}; "
              + ("GPU mask update: no GPU available" if r["gpu_mask_update_ms"] is None else
                 f"GPU mask update {r['gpu_mask_update_ms']:.2f} ms"),
              flush=True)
        emit(r)


if __name__ == "__main__":
    main()
