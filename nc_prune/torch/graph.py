"""Channels that must go together in a traced model: conv filters, their BatchNorm, residual additions, readers.

``torch.fx`` traces the model, and every tensor whose dimension 1 is a layer's output channels gets a
*channel group*. A group starts at a producer (a conv or Linear writes it), passes through BatchNorm,
element-wise activations, pooling, dropout and depthwise convolutions (whose filter ``c`` reads only channel
``c``), is merged with another by an addition or multiplication of the two (a residual, a squeeze-excite
scale), and ends at its readers: convs and Linears that read it as their input channels — after
``flatten(1)`` a Linear reads each channel as ``in_features / C`` consecutive features.

Channel ``c`` of a group is then one unit: row ``c`` of every producer and depthwise conv, entry ``c`` of
every BatchNorm, input channel ``c`` of every reader. A group that reaches the model's output, or meets an
operation this module does not understand (a reshape, a concatenation, a grouped conv), cannot lose
channels, and says why — slimming refuses it rather than guessing.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
>>> [(g.channels, g.producers, g.norms, [r for r, _ in g.readers]) for g in channel_groups(net) if g.ok]
[(8, ['0'], ['1'], ['3'])]
"""

from __future__ import annotations

import operator
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..core.coupling import Coupling, Slice
from ..core.slimming import ChannelGroup as _CoreGroup, ChannelGroups

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                 nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d,
                 nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d)
_PASS_FUNCTIONS = {torch.relu, F.relu, F.relu6, F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.hardswish,
                   F.leaky_relu, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                   torch.nn.functional.relu_}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_MERGE = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ChannelGroup(_CoreGroup):
    """A traced channel group (see :class:`nc_prune.core.slimming.ChannelGroup`), as a coupling for pruning."""

    @property
    def ok(self) -> bool:
        """Whether the group can lose channels: written, read, and understood everywhere."""
        return bool(self.producers) and bool(self.readers) and not self.why_not and not self.whole

    def coupling(self) -> Coupling:
        slices = tuple(Slice(p, "out") for p in self.producers + self.depthwise) + tuple(
            Slice(r, "in", w) for r, w in self.readers)
        return Coupling(f"channels of {', '.join(self.producers)}", "channel", self.channels, slices,
                        tuple(self.producers + [r for r, _ in self.readers]))


def _tensor_args(node: torch.fx.Node) -> List[torch.fx.Node]:
    return [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, torch.fx.Node)]


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace``, with the reason in a ``TypeError``-free error when the model cannot be traced."""
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises anything from the model's Python; the reason is reported
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def channel_groups(model: nn.Module, graph: Optional[torch.fx.GraphModule] = None) -> List[ChannelGroup]:
    """The channel groups of a traceable model (see the module doc); raises ``ValueError`` if it cannot be traced."""
    gm = graph if graph is not None else trace(model)
    modules = dict(gm.named_modules())
    groups = ChannelGroups(ChannelGroup)
    value: Dict[torch.fx.Node, Tuple[int, bool]] = {}  # node -> (group, flattened channel-major)

    def spoil(node: torch.fx.Node, why: str) -> None:
        for a in _tensor_args(node):
            if a in value:
                groups[value[a][0]].why_not.append(why)

    for node in gm.graph.nodes:
        ins = [value[a] for a in _tensor_args(node) if a in value]
        if node.op == "call_module":
            m = modules[node.target]
            name = str(node.target)
            if isinstance(m, _CONVS) or isinstance(m, nn.Linear):
                channels_in = m.in_channels if isinstance(m, _CONVS) else m.in_features
                groups_of = getattr(m, "groups", 1)
                if ins:
                    g, flat = ins[0]
                    info = groups[g]
                    if isinstance(m, _CONVS) and groups_of == channels_in == m.out_channels and not flat:
                        info.depthwise.append(name)  # depthwise: filter c reads channel c only
                        value[node] = (g, False)
                        continue
                    if groups_of != 1:
                        info.why_not.append(f"{name} is a grouped convolution (groups={groups_of})")
                    elif flat:
                        if channels_in % info.channels:
                            info.why_not.append(f"{name} reads {channels_in} features from {info.channels} channels")
                        else:
                            info.readers.append((name, channels_in // info.channels))
                    elif channels_in != info.channels:
                        info.why_not.append(f"{name} reads {channels_in} channels of a group of {info.channels}")
                    else:
                        info.readers.append((name, 1))
                out = groups.new(m.out_channels if isinstance(m, _CONVS) else m.out_features)
                groups[out].producers.append(name)
                value[node] = (out, False)
            elif isinstance(m, _NORMS) and ins:
                groups[ins[0][0]].norms.append(str(node.target))
                value[node] = ins[0]
            elif isinstance(m, _PASS_MODULES) and ins:
                value[node] = ins[0]
            elif isinstance(m, nn.Flatten) and ins:
                if m.start_dim != 1:
                    spoil(node, f"{node.target} flattens from dimension {m.start_dim}")
                else:
                    value[node] = (ins[0][0], True)
            elif ins:
                spoil(node, f"{node.target} ({type(m).__name__}) is not understood")
        elif node.op == "call_function":
            fn = node.target
            if fn in _PASS_FUNCTIONS and ins:
                value[node] = ins[0]
            elif fn in _MERGE and ins:
                if len(ins) < len(_tensor_args(node)):  # x + conv(x) with x the input, x * a parameter
                    spoil(node, f"{node.name} ({getattr(fn, '__name__', fn)}) combines the channels with a tensor "
                                f"they are not traced through (the model's input, a parameter or a buffer), "
                                f"whose width cannot follow")
                g = ins[0][0]
                for other in ins[1:]:
                    if other[1] != ins[0][1]:
                        spoil(node, "an addition of a flattened and an unflattened tensor")
                    g = groups.merge(g, other[0])
                value[node] = (g, ins[0][1])
            elif fn is torch.flatten and ins:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    spoil(node, f"torch.flatten from dimension {start}")
                else:
                    value[node] = (ins[0][0], True)
            elif fn is getattr and ins:
                pass  # x.shape and friends: no tensor flows on
            elif ins:
                spoil(node, f"{getattr(fn, '__name__', fn)} is not understood")
        elif node.op == "call_method":
            if node.target in _PASS_METHODS and ins:
                value[node] = ins[0]
            elif node.target == "flatten" and ins:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    spoil(node, f".flatten({start})")
                else:
                    value[node] = (ins[0][0], True)
            elif node.target == "mean" and ins and _spatial(node):
                value[node] = ins[0]
            elif node.target in ("size", "dim"):
                pass
            elif ins:
                spoil(node, f".{node.target}() is not understood")
        elif node.op == "output":
            spoil(node, "it is the model's output")
    return groups.all()


def _spatial(node: torch.fx.Node) -> bool:
    """``x.mean(dims)`` over spatial dimensions only (not 0 or 1)."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return bool(dims) and all(isinstance(d, int) and d >= 2 for d in dims)


def conv_couplings(model: nn.Module, covered: Any = ()) -> List[Coupling]:
    """Couplings of the channel groups that can lose channels, skipping groups touching ``covered`` layers;
    ``[]`` for a model ``torch.fx`` cannot trace (transformers models get theirs from their module structure)."""
    try:
        found = channel_groups(model)
    except ValueError:
        return []
    covered = set(covered)
    return [g.coupling() for g in found
            if g.ok and not covered & set(g.producers + g.depthwise + [r for r, _ in g.readers])]
