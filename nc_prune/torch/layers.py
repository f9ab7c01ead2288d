"""Finding the prunable weights of a torch model, and their canonical layout.

torch stores Linear and ConvNd weights as ``(out, in, *kernel)`` — the canonical layout — so they are
shown to the core as they are. transformers' ``Conv1D`` stores ``(in, out)`` and is transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..core.layers import LayerInfo

from .state import MASK_SUFFIX, SCORE_SUFFIX, STEP_BUFFER  # noqa: F401 (STEP_BUFFER re-exported)


def is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 style): a Linear whose weight is stored ``(in, out)``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(
        getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 2


@dataclass
class TorchTarget:
    """One prunable weight: the module holding it, the parameter name and its layout."""

    name: str
    module: nn.Module
    param: str = "weight"
    transposed: bool = False
    path: Optional[str] = None  # the module's path, where it differs from ``name`` (MHA's "attn" for "attn.in_proj_weight")

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self.module, self.param)

    @property
    def key(self) -> str:
        """The weight's key in the model's ``state_dict``."""
        return _join(self.name if self.path is None else self.path, self.param)

    @property
    def mask_name(self) -> str:
        return self.param + MASK_SUFFIX

    @property
    def score_name(self) -> str:
        return self.param + SCORE_SUFFIX

    def canonical(self, t: torch.Tensor) -> torch.Tensor:
        return t.t() if self.transposed else t

    def native(self, t: torch.Tensor) -> torch.Tensor:
        return t.t() if self.transposed else t


_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: torch.compile and DistributedDataParallel wrap a model and add these to every module name.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _join(prefix: str, child: str) -> str:
    return f"{prefix}.{child}" if prefix else child


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile(model)`` / ``DistributedDataParallel(model)`` wrappers, else ``model``."""
    while True:
        inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        if inner is None and type(model).__name__ == "DistributedDataParallel":
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _prunable(module: nn.Module) -> bool:
    return (isinstance(module, _PRUNABLE) and isinstance(getattr(module, "weight", None), nn.Parameter)) \
        or is_hf_conv1d(module)


def find_targets(model: nn.Module) -> Tuple[List[LayerInfo], Dict[str, TorchTarget]]:
    """Every Linear, Conv1d/2d/3d and transformers ``Conv1D`` weight, in module order, once per Parameter.

    A Parameter held by several modules (tied embeddings: GPT-2's ``lm_head.weight`` *is*
    ``transformer.wte.weight``) is one target, under its first prunable owner, with the other owners in
    ``shared_with``; a frozen one (``requires_grad=False``) is marked not trainable. The selection rules
    leave both out unless named exactly (see :mod:`nc_prune.core.layers`).
    """
    owners: Dict[int, List[str]] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    infos: List[LayerInfo] = []
    targets: Dict[str, TorchTarget] = {}
    seen: set = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and isinstance(module.in_proj_weight, nn.Parameter):
            # q, k and v of torch's attention are one (3E, E) Parameter: prunable by heads (pattern "mha")
            target = TorchTarget(_join(name, "in_proj_weight"), module, "in_proj_weight", path=name)
            type_name = "MultiheadAttention"
        elif _prunable(module):
            target = TorchTarget(name, module, transposed=not isinstance(module, _PRUNABLE))
            type_name = type(module).__name__
        else:
            continue
        weight = target.weight
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        shared = tuple(o for o in owners.get(id(weight), ()) if o != target.key)
        shape = tuple(target.canonical(weight).shape)
        infos.append(LayerInfo(target.name, (type_name,), shape, is_linear=isinstance(module, nn.Linear),
                               trainable=bool(weight.requires_grad), shared_with=shared))
        targets[target.name] = target
    return infos, targets
