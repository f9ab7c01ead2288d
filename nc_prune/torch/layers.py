"""Finding the prunable weights of a torch model, and their canonical layout.

torch stores Linear and ConvNd weights as ``(out, in, *kernel)`` — the canonical layout — so they are
shown to the core as they are. transformers' ``Conv1D`` stores ``(in, out)`` and is transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..core.layers import LayerInfo

MASK_SUFFIX = "_prune_mask"
SCORE_SUFFIX = "_prune_score"
STEP_BUFFER = "nc_prune_step"


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

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self.module, self.param)

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


def find_targets(model: nn.Module) -> Tuple[List[LayerInfo], Dict[str, TorchTarget]]:
    """Every Linear, Conv1d/2d/3d and transformers ``Conv1D`` weight, in module order."""
    infos: List[LayerInfo] = []
    targets: Dict[str, TorchTarget] = {}
    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE) and isinstance(getattr(module, "weight", None), nn.Parameter):
            target = TorchTarget(name, module)
        elif is_hf_conv1d(module):
            target = TorchTarget(name, module, transposed=True)
        else:
            continue
        shape = tuple(target.canonical(target.weight).shape)
        infos.append(LayerInfo(name, (type(module).__name__,), shape, is_linear=isinstance(module, nn.Linear)))
        targets[name] = target
    return infos, targets
