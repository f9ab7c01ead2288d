"""The models of the slimming benchmark, built the same way in nc_prune's environment and in Torch-Pruning's.

``benchmarks/slim_speed.py`` and ``benchmarks/tp_driver.py`` both import this module, so the two sides
prune the same architectures, feed them the same inputs and read the same output tensor; the dense
weights cross from one process to the other as a state dict, so both start from identical weights.

* ``bert``: a BERT-base-shaped encoder (``transformers.BertModel``: hidden 768, 12 heads, FFN 3072,
  vocabulary 30522), random weights, fewer layers when asked;
* ``llama``: a Llama-style decoder with grouped-query attention (``transformers.LlamaModel``: hidden 1024,
  16 query heads over 4 KV heads, FFN 2816), random weights;
* ``resnet50``: ResNet-50 (bottleneck blocks 3-4-6-3, widths 64..2048, BatchNorm, residual additions),
  written here in plain torch because torchvision is not installed beside this torch; the layout and the
  parameter count (25,557,032 at the full width) are torchvision's ``resnet50(weights=None)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence

import torch
from torch import nn


# ---- ResNet-50 in plain torch -------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4, each with BatchNorm; the residual added, then ReLU."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50's layout; ``base`` scales every width (64 is the real model), ``blocks`` the stage depths."""

    def __init__(self, base: int = 64, blocks: Sequence[int] = (3, 4, 6, 3), classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = base, []
        for i, n in enumerate(blocks):
            width = base * 2 ** i
            stage = [Bottleneck(cin, width, 1 if i == 0 else 2)]
            stage += [Bottleneck(width * 4, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            cin = width * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_norms(model: nn.Module, seed: int) -> None:
    """Random BatchNorm statistics and affine terms, so no channel is trivially alike (fresh ones are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


# ---- the cases ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """How big a model of a case is built: ``layers`` blocks (stages for ResNet), widths scaled by ``scale``."""

    layers: int
    scale: float = 1.0


def bert(shape: Shape) -> nn.Module:
    import transformers
    s = shape.scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.BertModel(transformers.BertConfig(
            hidden_size=int(768 * s), num_attention_heads=12, intermediate_size=int(3072 * s),
            num_hidden_layers=shape.layers, vocab_size=30522 if s == 1 else 1000, max_position_embeddings=512))


def llama(shape: Shape) -> nn.Module:
    import transformers
    s = shape.scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.LlamaModel(transformers.LlamaConfig(
            hidden_size=int(1024 * s), num_attention_heads=16, num_key_value_heads=4, head_dim=int(64 * s),
            intermediate_size=int(2816 * s), num_hidden_layers=shape.layers, vocab_size=32000 if s == 1 else 1000,
            max_position_embeddings=512, bos_token_id=0, eos_token_id=0))


def resnet50(shape: Shape) -> nn.Module:
    blocks = (3, 4, 6, 3) if shape.layers >= 4 else (1,) * 4
    return ResNet50(base=int(64 * shape.scale), blocks=blocks, classes=1000 if shape.scale == 1 else 10)


BUILDERS: Dict[str, Callable[[Shape], nn.Module]] = {"bert": bert, "llama": llama, "resnet50": resnet50}


def build(kind: str, shape: Shape, seed: int = 0) -> nn.Module:
    """The dense model of a case, in eval mode, with seeded random weights."""
    torch.manual_seed(seed)
    model = BUILDERS[kind](shape).eval()
    if kind == "resnet50":
        _randomize_norms(model, seed)
    return model


def inputs(kind: str, batch: int, size: int, seed: int = 1) -> Any:
    """A batch for a case: ``size`` tokens per sequence, or ``size`` x ``size`` pixels."""
    g = torch.Generator().manual_seed(seed)
    if kind == "resnet50":
        return torch.randn(batch, 3, size, size, generator=g)
    return {"input_ids": torch.randint(0, 1000, (batch, size), generator=g)}


def forward(model: nn.Module, x: Any) -> torch.Tensor:
    """The output compared and timed: the last hidden state of a transformers model, a CNN's logits."""
    out = model(**x) if isinstance(x, dict) else model(x)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_params(model: nn.Module) -> int:
    """Parameters of the layers that can lose heads or channels: everything but embeddings and norms of
    transformers models (their hidden size stays); every parameter of a CNN."""
    if not hasattr(model, "config"):
        return params(model)
    return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
               for name, m in model.named_modules() if isinstance(m, nn.Linear) and "pooler" not in name)
