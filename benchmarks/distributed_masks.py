"""Global masks of an FSDP2-sharded model: time, memory per rank and communication, 1 vs 2 vs 4 ranks.

    python benchmarks/distributed_masks.py [--layers 8] [--size 1024] [--worlds 1,2,4] [--repeat 5] [--out FILE]
    python benchmarks/distributed_masks.py --quick        # 4 layers of 256 x 256, ~20 s

The same total model — ``layers`` square ``nn.Linear(size, size)``, built from one seed, each layer and the
whole model ``fully_shard``-ed (FSDP2, DTensor weights, ``Shard(0)`` rows; the last layer is taken as the
head and left dense, as prepare_pruning does by default) — is pruned with ``magnitude``,
``4x1``, global scope, 50 %, on 1, 2 and 4 gloo processes on CPU (``torch.multiprocessing.spawn``, one thread
per rank). On every rank the benchmark times the pruner's ``compute_new_masks`` (the global selection: each
rank's unit scores, per-digit histograms ``all_reduce``-d, ties handed out by one ``all_gather``; best of
``--repeat``, the slowest rank's time per repeat, after a barrier) and reads the memory that call added on
top of what the rank held (peak RSS minus RSS before it, ``_common.reset_peak``/``peak``), and
``nc_prune.torch.distributed.count_collectives`` adds up the bytes nc_prune handed to collectives in one
update. The masks are gathered once after timing and must be identical for every world size.

Reported as ratios to one rank — time, memory added per rank, weights held per rank — never bare times;
``comm_bytes`` is the per-rank volume of one mask update (all_reduce + all_gather inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # _common, and this checkout's nc_prune

from _common import digest, emit, machine, mib, peak, reset_peak  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, args: Dict, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    from nc_prune.torch.distributed import count_collectives

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(args["size"], args["size"], bias=False) for _ in range(args["layers"])])
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", pruning_scope="global",
                                  target_sparsity=0.5, start_step=0, end_step=0)
        pruning = prepare_pruning(model, cfg)
        (pruner,) = pruning.pruners
        step = pruner.scheduler.last_pruning_step()
        pruner.compute_new_masks(step)  # warm-up: first-call costs are not the method's
        times, extra = [], None
        for _ in range(args["repeat"]):
            dist.barrier()
            base = reset_peak()
            start = time.perf_counter()
            with count_collectives() as log:
                masks = pruner.compute_new_masks(step)
            took = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
            if extra is None:
                extra = peak() - base - sum(m.nbytes for m in masks.values())
            dist.all_reduce(took, op=dist.ReduceOp.MAX)  # the update ends when the slowest rank has its masks
            times.append(float(took))
        held = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
        for name, keep in masks.items():  # store them, to read the whole masks back below
            pruner._set_mask(name, keep)
        whole = {n: getattr(model, n).weight_prune_mask.full_tensor().numpy() for n in pruner.modules}
        result = {"seconds": min(times), "extra_bytes": int(extra), "weights_bytes": int(held),
                  "comm_bytes": log.total_bytes, "comm": dict(log.bytes), "calls": dict(log.calls)}
        if rank == 0:
            result["digests"] = {n: digest(m) for n, m in whole.items()}
            result["pruned"] = int(sum((~m).sum() for m in whole.values()))
            result["weights"] = int(sum(m.size for m in whole.values()))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def run_world(world: int, args: Dict) -> List[Dict]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank, args=(world, _free_port(), args, tmp), nprocs=world, join=True)
        out = []
        for r in range(world):
            with open(os.path.join(tmp, f"rank{r}.json")) as f:
                out.append(json.load(f))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="4 layers of 256 x 256, 3 repeats (~20 s)")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args(argv)
    if a.quick:
        a.layers, a.size, a.repeat = 4, 256, 3
    worlds = [int(w) for w in a.worlds.split(",")]
    for w in worlds:
        if a.size % (4 * w):
            ap.error(f"--size {a.size} must split into row shards of whole 4x1 blocks on {w} ranks "
                     f"(a multiple of {4 * w})")
    args = {"layers": a.layers, "size": a.size, "repeat": a.repeat}
    runs = {w: run_world(w, args) for w in worlds}
    base = runs[worlds[0]]
    ref_digests = base[0]["digests"]
    rows = []
    for w, ranks in runs.items():
        same = ranks[0]["digests"] == ref_digests
        if not same:
            raise SystemExit(f"{w} ranks: the masks differ from {worlds[0]} rank(s): {ranks[0]['digests']} vs "
                             f"{ref_digests}")
        extra = max(r["extra_bytes"] for r in ranks)
        row = {"bench": "distributed_masks", "ranks": w, "layers": a.layers, "size": a.size,
               "pattern": "4x1", "scope": "global", "target": 0.5,
               "pruned": ranks[0]["pruned"], "of": ranks[0]["weights"], "masks_equal_1_rank": same,
               "time_vs_1_rank": round(ranks[0]["seconds"] / base[0]["seconds"], 2),
               "extra_mem_per_rank_vs_1_rank": round(extra / max(r["extra_bytes"] for r in base), 2),
               "weights_per_rank_vs_1_rank": round(max(r["weights_bytes"] for r in ranks) / base[0]["weights_bytes"], 2),
               "extra_mem_per_rank_mib": mib(extra),
               "comm_bytes_per_update": ranks[0]["comm_bytes"], "comm_bytes_by_op": ranks[0]["comm"],
               "collective_calls": ranks[0]["calls"]}
        emit(row)
        rows.append(row)
    print(f"global 4x1 at 50 %, {a.layers} x Linear({a.size}, {a.size}) under FSDP2 (gloo, CPU, 1 thread per rank): "
          f"{rows[0]['pruned']:,} of {rows[0]['of']:,} weights pruned (the last layer, taken as the head, stays "
          f"dense), masks identical on every world size")
    print(f"{'ranks':>5}  {'time vs 1':>9}  {'mem/rank vs 1':>13}  {'weights/rank vs 1':>17}  "
          f"{'comm/update':>11}  collectives")
    for r in rows:
        calls = ", ".join(f"{k} x{v}" for k, v in sorted(r["collective_calls"].items())) or "none"
        print(f"{r['ranks']:>5}  {r['time_vs_1_rank']:>8.2f}x  {r['extra_mem_per_rank_vs_1_rank']:>12.2f}x  "
              f"{r['weights_per_rank_vs_1_rank']:>16.2f}x  {r['comm_bytes_per_update']:>9,} B  {calls}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine": machine(), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
