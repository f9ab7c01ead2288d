"""Prune a small ResNet while training it, written the way INC 2.x pruning scripts are written.

A training loop drives ``compression_manager.callbacks``; the model is a ResNet-style CNN (conv, BatchNorm,
residual blocks with a 1x1 downsample, average pooling, a Linear classifier), the data random tensors from a
fixed seed. ``tests/conformance/test_inc_scripts.py`` runs this file as it is (nc_prune) and with the two
lines between the ``imports`` markers replaced by INC's imports; nothing else differs.

    python resnet_prune.py scenarios.json   # runs the file's "resnet" scenarios, prints each layer's sparsity

A scenario is a dict: ``pruning_configs`` and ``globals`` (the config's arguments), ``epochs`` and
``steps_per_epoch``, optionally ``seed``, ``lr``, ``prezero`` (weights zeroed before pruning starts, for
``pattern_lock``) and ``probe`` (a layer whose weights are kept before and after the first step).
"""

import json
import re
import sys

import torch
import torch.nn as nn

# >>> imports
from nc_prune import WeightPruningConfig
from nc_prune.torch import prepare_compression
# <<< imports

CLASSES = 8
BATCH = 8


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2))
        self.layer3 = nn.Sequential(BasicBlock(32, 32, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, CLASSES)  # the classifier, registered last

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def prunable_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def init_weights(model, seed):
    """Weights drawn from one generator in name order, so every torch build starts from the same numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)


def as_2d(w):
    """(out, in, kh, kw) -> (out, kh*kw*in), input channel fastest; a Linear weight as it is."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w


def zero_blocks(model, op_names, block, ratio, seed):
    """Zero ``ratio`` of the ``block`` (rows x cols of the 2-D view) blocks of the matching layers."""
    g = torch.Generator().manual_seed(seed)
    bh, bw = block
    with torch.no_grad():
        for name, m in prunable_layers(model):
            if not any(re.search(p, name) for p in op_names):
                continue
            v = as_2d(m.weight).clone()
            o, c = v.shape
            n = (o // bh) * (c // bw)
            keep = torch.ones(n)
            keep[torch.randperm(n, generator=g)[: int(n * ratio)]] = 0
            v = v.reshape(o // bh, bh, c // bw, bw) * keep.reshape(o // bh, 1, c // bw, 1)
            v = v.reshape(o, c)
            if m.weight.dim() == 4:
                v = v.reshape(o, m.weight.shape[2], m.weight.shape[3], m.weight.shape[1]).permute(0, 3, 1, 2)
            m.weight.copy_(v)


def make_data(seed, steps):
    g = torch.Generator().manual_seed(seed + 1000)
    images = torch.randn(steps, BATCH, 4, 8, 8, generator=g)
    labels = torch.randint(0, CLASSES, (steps, BATCH), generator=g)
    return images, labels


def run(scenario):
    seed = scenario.get("seed", 0)
    torch.manual_seed(seed)
    model = TinyResNet()
    init_weights(model, seed)
    if "prezero" in scenario:
        zero_blocks(model, **scenario["prezero"])
    layers = prunable_layers(model)
    initial = {name: m.weight.detach().clone() for name, m in layers}
    probe = scenario.get("probe")

    config = WeightPruningConfig(scenario["pruning_configs"], **scenario["globals"])
    compression_manager = prepare_compression(model=model, confs=config)
    compression_manager.callbacks.on_train_begin()

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=scenario.get("lr", 0.05), momentum=0.9, weight_decay=1e-3)
    epochs, steps_per_epoch = scenario["epochs"], scenario["steps_per_epoch"]
    images, labels = make_data(seed, epochs * steps_per_epoch)

    zeros_per_step, loss_returned = [], []
    after_first_step = None
    for epoch in range(epochs):
        model.train()
        compression_manager.callbacks.on_epoch_begin(epoch)
        for local_step in range(steps_per_epoch):
            image, target = images[epoch * steps_per_epoch + local_step], labels[epoch * steps_per_epoch + local_step]
            compression_manager.callbacks.on_step_begin(local_step)
            output = model(image)
            loss = criterion(output, target)
            returned = compression_manager.callbacks.on_after_compute_loss(image, output, loss)
            optimizer.zero_grad()
            loss.backward()
            compression_manager.callbacks.on_before_optimizer_step()
            optimizer.step()
            compression_manager.callbacks.on_after_optimizer_step()
            compression_manager.callbacks.on_step_end()
            zeros_per_step.append([int((m.weight == 0).sum()) for _, m in layers])
            loss_returned.append(type(returned).__name__ if returned is not loss else "the loss")
            if probe is not None and after_first_step is None:
                after_first_step = dict(layers)[probe].weight.detach().clone()
        compression_manager.callbacks.on_epoch_end()
    compression_manager.callbacks.on_train_end()

    compression_manager.callbacks.on_before_eval()
    model.eval()
    with torch.no_grad():
        eval_loss = float(criterion(model(images[0]), labels[0]))
    compression_manager.callbacks.on_after_eval()

    return {
        "layers": [name for name, _ in layers],
        "initial": {name: w.numpy() for name, w in initial.items()},
        "final": {name: m.weight.detach().clone().numpy() for name, m in layers},
        "zeros_per_step": zeros_per_step,
        "loss_returned": loss_returned,
        "probe": None if probe is None else {"initial": initial[probe].numpy(),
                                             "after_first_step": after_first_step.numpy()},
        "eval_loss": eval_loss,
        "compression_manager": compression_manager,
    }


if __name__ == "__main__":
    for scenario in json.load(open(sys.argv[1])):
        if scenario.get("model", "resnet") != "resnet":
            continue
        result = run(scenario)
        print(scenario.get("id", ""))
        for name in result["layers"]:
            w = result["final"][name]
            print(f"  {name:24s} {tuple(w.shape)!s:16s} sparsity {float((w == 0).mean()):.4f}")
