"""The demo in PyTorch: the digits CNN, its training loop, and pruning through the optimizer's hooks."""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..core.config import WeightPruningConfig
from ..core.report import SparsityReport
from ..torch import find_targets, prepare_pruning, sparsity_report, strip
from .data import Digits, batch_indices

StepHook = Callable[[nn.Module], None]


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and two Linear layers for 8x8 grey images (about 13.6k weights).

    >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def build_model(seed: int = 0) -> DigitsCNN:
    """A freshly initialised :class:`DigitsCNN` (the same numbers for the same seed)."""
    torch.manual_seed(seed)
    return DigitsCNN()


@torch.no_grad()
def accuracy(model: nn.Module, data: Digits) -> float:
    """Share of ``data``'s test images that ``model`` classifies right (the model is left in eval mode)."""
    model.eval()
    return float((model(torch.from_numpy(data.x_test)).argmax(1) == torch.from_numpy(data.y_test)).float().mean())


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore: for a model this small, threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchDemo:
    """The PyTorch half of the demo. Every method is deterministic for a given seed."""

    name = "torch"
    checkpoint_suffix = ".pt"

    def __init__(self, data: Digits, batch_size: int, seed: int = 0) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self._x_train = torch.from_numpy(data.x_train)
        self._y_train = torch.from_numpy(data.y_train)

    def build(self) -> nn.Module:
        return build_model(self.seed)

    def fit(self, model: nn.Module, epochs: int, lr: float, config: Optional[WeightPruningConfig] = None,
            on_step: Optional[StepHook] = None) -> nn.Module:
        """Train a copy of ``model`` with Adam, pruned as ``config`` says when given; returns the copy."""
        with one_thread():
            return self._fit(copy.deepcopy(model), epochs, lr, config, on_step)

    def _fit(self, model, epochs, lr, config, on_step):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if config is not None:
            prepare_pruning(model, config, opt)  # pruning now follows opt.step()
        model.train()
        n = len(self._x_train)
        for epoch in range(epochs):
            for idx in batch_indices(n, self.batch_size, self.seed * 1000 + epoch):
                b = torch.from_numpy(idx)
                opt.zero_grad()
                nn.functional.cross_entropy(model(self._x_train[b]), self._y_train[b]).backward()
                opt.step()
                if on_step is not None:
                    on_step(model)
        model.eval()
        return model

    def accuracy(self, model: nn.Module) -> float:
        return accuracy(model, self.data)

    def report(self, model: nn.Module) -> SparsityReport:
        return sparsity_report(model)

    def weights(self, model: nn.Module) -> Dict[str, np.ndarray]:
        """Every prunable weight in the canonical layout ``(out, in, *kernel)``, as numpy."""
        _, targets = find_targets(model)
        return {name: t.canonical(t.weight.detach()).cpu().numpy() for name, t in targets.items()}

    def finish(self, model: nn.Module) -> nn.Module:
        """A plain model (no pruning hooks or buffers) with the zeros kept."""
        return strip(model)

    def save(self, model: nn.Module, path: str) -> None:
        torch.save(model.state_dict(), path)

