"""Training-time pruning in PyTorch: a CNN on scikit-learn's digits, to 85 % in 4x1 blocks and to 2:4.

    python examples/torch_train_prune.py            # about 15 s on 2 CPU cores
    python examples/torch_train_prune.py --quick    # a few seconds (CI)

Shows the whole life of a pruned model: ``prepare_pruning`` with the optimizer, a checkpoint half-way
through pruning, a resume into brand-new model and optimizer objects (as a new process would), the
sparsity report, ``strip`` and a plain saved model. The data (1,797 8x8 images) ships with
scikit-learn; the accuracies are on 359 held-out images and stated in docs/torch.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile

import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.demo.data import batch_indices, load_digits_split, steps_per_epoch
from nc_prune.demo.torch_part import DigitsCNN, accuracy
from nc_prune.torch import prepare_pruning, sparsity_report, strip

BATCH = 32


def train(model, optimizer, data, epochs, first_epoch=0):
    """Plain PyTorch training; pruning happens inside ``optimizer.step()`` through its hooks."""
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    model.train()
    for epoch in range(first_epoch, first_epoch + epochs):
        for idx in batch_indices(len(x), BATCH, seed=epoch):
            b = torch.from_numpy(idx)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            optimizer.step()


def prune(dense, data, pattern, target, epochs, workdir):
    """Fine-tune a copy of ``dense`` for ``epochs`` while pruning it; stop and resume half-way."""
    steps = steps_per_epoch(len(data.x_train), BATCH) * epochs
    frequency = max(1, steps // (2 * epochs))  # every half epoch
    config = WeightPruningConfig(
        pruning_type="snip_momentum", pattern=pattern, target_sparsity=target,
        excluded_op_names=["^conv1$"],  # 1 input channel: 9 weights per filter, no groups of 4
        start_step=0, end_step=int(steps * 0.6) // frequency * frequency, pruning_frequency=frequency,
        sparsity_decay_type="cube")
    model = copy.deepcopy(dense)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    prepare_pruning(model, config, optimizer)
    half = epochs // 2
    train(model, optimizer, data, half)

    # checkpoint in the middle of the schedule: masks, scores and the step counter are in state_dict()
    path = os.path.join(workdir, f"ckpt_{pattern.replace(':', 'in')}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)

    # resume into new objects, as a new process would: prepare first, then load
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruning = prepare_pruning(model, config, optimizer)
    state = torch.load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    assert pruning.global_step == steps_per_epoch(len(data.x_train), BATCH) * half
    train(model, optimizer, data, epochs - half, first_epoch=half)

    report = pruning.report()
    acc = accuracy(model, data)
    strip(model)  # a plain DigitsCNN again: loads into an unpruned model, no nc_prune needed
    plain = os.path.join(workdir, f"digits_{pattern.replace(':', 'in')}.pt")
    torch.save(model.state_dict(), plain)
    fresh = DigitsCNN()
    fresh.load_state_dict(torch.load(plain))
    assert sparsity_report(fresh).total_zeros == report.total_zeros
    return report, acc


def main(argv=None):
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 images and a few epochs")
    parser.add_argument("--out", default=None, help="directory for checkpoints (default: a temporary one)")
    args = parser.parse_args(argv)
    dense_epochs, prune_epochs = (10, 4) if args.quick else (25, 12)
    data = load_digits_split(limit=600 if args.quick else None)
    torch.manual_seed(0)

    dense = DigitsCNN()
    optimizer = torch.optim.Adam(dense.parameters(), lr=3e-3)
    train(dense, optimizer, data, dense_epochs)
    baseline = copy.deepcopy(dense)  # the fair comparison: dense, trained as long as the pruned models
    train(baseline, torch.optim.Adam(baseline.parameters(), lr=1e-3), data, prune_epochs)
    print(f"dense: {accuracy(dense, data):.1%} after {dense_epochs} epochs, "
          f"{accuracy(baseline, data):.1%} after {prune_epochs} more")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.out or tmp
        os.makedirs(workdir, exist_ok=True)
        for pattern, target in [("4x1", 0.85), ("2:4", 0.5)]:
            report, acc = prune(dense, data, pattern, target, prune_epochs, workdir)
            results[pattern] = (report, acc)
            print(f"\n{pattern}, target {target:.0%}: accuracy {accuracy(baseline, data):.1%} (dense) → {acc:.1%}")
            print(report)
    return results


if __name__ == "__main__":
    main()
