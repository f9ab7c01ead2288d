"""Twin models: one pruned by torch.nn.utils.prune, one by nc_prune.torch.prune, compared in every way."""

from __future__ import annotations

import copy
from typing import Callable, Dict, Tuple

import pytest

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nc_prune.torch import prune as nc_prune_api


class Net(nn.Module):
    """A conv layer, two linear layers: 4-D, 2-D and 1-D tensors to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.fc1 = nn.Linear(64, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def make_input(seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 2, 6, 6, generator=g)


def twins(factory: Callable[[], nn.Module] = Net, seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    a = factory()
    return a, copy.deepcopy(a)


def original_ids(model: nn.Module) -> Dict[int, str]:
    """id(parameter) -> its qualified name before pruning."""
    return {id(p): n for n, p in model.named_parameters()}


def identity_map(model: nn.Module, before: Dict[int, str]) -> Dict[str, str]:
    """For every parameter now: the name it had before pruning (or "" for a new object)."""
    return {n: before.get(id(p), "") for n, p in model.named_parameters()}


def hook_structure(model: nn.Module):
    out = []
    for name, mod in model.named_modules():
        for hook in mod._forward_pre_hooks.values():
            if hasattr(hook, "_tensor_name"):
                inner = [type(m).__name__ for m in hook] if hasattr(hook, "_pruning_methods") else None
                out.append((name, hook._tensor_name, type(hook).__name__, inner))
    return out


def is_pruned_any(model: nn.Module) -> bool:
    return torch_prune.is_pruned(model) or nc_prune_api.is_pruned(model)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    """Same state_dict (keys in order, dtypes, values), parameters and buffers, hooks and pruned tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
    assert hook_structure(a) == hook_structure(b)
    assert is_pruned_any(a) == is_pruned_any(b)
    for name, mod in a.named_modules():
        other = b.get_submodule(name)
        for key in list(mod._buffers):
            if key.endswith("_mask"):
                t = key[: -len("_mask")]
                assert torch.equal(getattr(mod, t), getattr(other, t)), f"{name}.{t}"


def assert_same_training(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """Same outputs and the same gradients on every parameter."""
    for m in (a, b):
        m.zero_grad(set_to_none=True)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    ga = {n: p.grad for n, p in a.named_parameters()}
    gb = {n: p.grad for n, p in b.named_parameters()}
    assert list(ga) == list(gb)
    for n in ga:
        assert (ga[n] is None) == (gb[n] is None), n
        if ga[n] is not None:
            assert torch.equal(ga[n], gb[n]), n


def run_twins(scenario: Callable, factory: Callable[[], nn.Module] = Net, seed: int = 0, rng_seed: int = 7,
              x: torch.Tensor = None) -> Tuple[nn.Module, nn.Module]:
    """Run ``scenario(prune_module, model)`` on twins with the same RNG seed and compare everything."""
    a, b = twins(factory, seed)
    ids_a, ids_b = original_ids(a), original_ids(b)
    torch.manual_seed(rng_seed)
    scenario(torch_prune, a)
    after_a = torch.rand(3)
    torch.manual_seed(rng_seed)
    scenario(nc_prune_api, b)
    after_b = torch.rand(3)
    assert torch.equal(after_a, after_b), "the two runs drew a different amount of random numbers"
    assert_same_state(a, b)
    assert identity_map(a, ids_a) == identity_map(b, ids_b)
    if x is not None:
        assert_same_training(a, b, x)
    return a, b


def assert_same_error(call: Callable, builtin: type) -> nn.Module:
    """``call(prune_module, model)`` raises ``builtin`` with PyTorch and with nc_prune (an NcPruneError too),
    and leaves nc_prune's model unpruned. Returns that model."""
    from nc_prune import NcPruneError
    a, b = twins()
    with pytest.raises(builtin):
        call(torch_prune, a)
    with pytest.raises(builtin) as info:
        call(nc_prune_api, b)
    assert isinstance(info.value, NcPruneError) and len(str(info.value)) > 30, str(info.value)
    assert not nc_prune_api.is_pruned(b)
    return b
