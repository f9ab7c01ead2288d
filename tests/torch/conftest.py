import pytest
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv layers with output channels divisible by 4 and a Linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.conv2(x))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.fixture
def seeded():
    torch.manual_seed(0)


def train_steps(model, opt, steps, in_shape=(8, 16), n_out=None, seed=0):
    """Deterministic training steps on random data."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(*in_shape, generator=gen)
        opt.zero_grad()
        out = model(x)
        target = torch.randint(0, out.shape[1], (out.shape[0],), generator=gen)
        nn.functional.cross_entropy(out, target).backward()
        opt.step()


def zeros(t):
    return int((t == 0).sum())
