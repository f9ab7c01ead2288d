"""Prune while training with DistributedDataParallel: 2 CPU processes (gloo), snip_momentum, 4x1, global scope.

    torchrun --nproc-per-node 2 examples/ddp_pruning.py      # torchrun starts the processes
    python examples/ddp_pruning.py [--quick]                  # the script starts 2 processes itself

Each rank trains on its half of every global batch. prepare_pruning gets the optimizer as usual; DDP averages
the gradients in backward(), before optimizer.step() runs the pruning hooks, so the snip_momentum scores and
the masks are the same on every rank — checked by nc_prune after every mask update (a mask checksum
all_reduce) and printed here. Half-way, rank 0 saves a checkpoint (model.module.state_dict()); new
objects on every rank load it and finish the schedule, ending exactly where the uninterrupted run ends.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nc_prune import WeightPruningConfig
from nc_prune.torch import prepare_pruning, strip
from nc_prune.torch.distributed import mask_checksums

BATCH = 32


def make(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def global_batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, 32, generator=g)
    return x, (x[:, :4].argmax(dim=1))  # a learnable synthetic task


def train(ddp, optimizer, steps, first=0):
    rank, world = dist.get_rank(), dist.get_world_size()
    n = BATCH // world
    for step in range(first, first + steps):
        x, y = global_batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(ddp(x[rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n]).backward()
        optimizer.step()  # DDP has averaged the gradients; pruning runs in here


def run(steps, ckpt_dir):
    rank = dist.get_rank()
    torch.set_num_threads(1)
    config = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                 pruning_scope="global", start_step=steps // 10, end_step=steps * 6 // 10,
                                 pruning_frequency=max(steps // 10, 1), op_names=["module.0", "module.2"])
    half = steps // 2

    model, optimizer = make()                       # 1. prepare, wrap, train half the steps, checkpoint
    pruning = prepare_pruning(model, config, optimizer)  # "module.0" names layer "0": one config for both
    ddp = DDP(model)
    train(ddp, optimizer, half)
    path = os.path.join(ckpt_dir, "ddp_ckpt.pt")
    if rank == 0:
        torch.save({"model": ddp.module.state_dict(), "optimizer": optimizer.state_dict()}, path)
    dist.barrier()

    resumed, optimizer2 = make(seed=1)              # 2. new objects on every rank: prepare, load, wrap, finish
    pruning2 = prepare_pruning(resumed, config, optimizer2)
    state = torch.load(path)
    resumed.load_state_dict(state["model"])
    optimizer2.load_state_dict(state["optimizer"])
    resumed_at = pruning2.global_step
    train(DDP(resumed), optimizer2, steps - half, first=half)

    train(ddp, optimizer, steps - half, first=half)  # the uninterrupted run, for comparison

    sums = mask_checksums(list(pruning2.masks.values()))
    every = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(every, sums)
    same_ranks = all(torch.equal(e, every[0]) for e in every)
    same_resume = all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), model.state_dict().values()))
    x, y = global_batch(10_000)
    accuracy = float((resumed(x).argmax(dim=1) == y).float().mean())
    if rank == 0:
        print(pruning2.report())
        print(f"resumed at step {resumed_at}, ended at step {pruning2.global_step}")
        print(f"masks identical on all {len(every)} ranks: {same_ranks}")
        print(f"resumed run equals the uninterrupted run bit for bit: {same_resume}")
        print(f"accuracy on a held-out batch: {accuracy:.2f}")
    strip(resumed)  # a plain model again; its zeros stay
    return same_ranks and same_resume


def _spawned(rank, world, port, steps, ckpt_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if not run(steps, ckpt_dir):
            raise SystemExit(1)
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (CI)")
    args = parser.parse_args()
    steps = 40 if args.quick else 200
    with tempfile.TemporaryDirectory() as ckpt_dir:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun: one process of many
            dist.init_process_group("gloo")
            shared = [ckpt_dir if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(shared)  # rank 0's directory (torchrun's processes share the machine)
            try:
                ok = run(steps, shared[0])
            finally:
                dist.barrier()
                dist.destroy_process_group()
            raise SystemExit(0 if ok else 1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_spawned, args=(2, port, steps, ckpt_dir), nprocs=2, join=True)


if __name__ == "__main__":
    main()
