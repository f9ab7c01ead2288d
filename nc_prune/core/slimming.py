"""Slimming without a framework: what was removed, why a model is refused, and when a unit may go.

Both backends' ``model_slim`` cut pruned units out of a model for real. A unit is a head of an attention
layer, or a *channel*: one output of the layers that write it (a Dense unit, a conv filter, with the
BatchNorm entry and depthwise filter on its way) shared by every layer that reads it. A unit may go only
when removing it cannot change the output — every reader's weights for it are zero, or, for a head, its
slice of the output projection is — so the slimmed model computes what the masked one did.

:class:`ChannelGroup` gathers one channel's layers as a backend walks its model's graph (residual additions
merge two groups into one, see :class:`ChannelGroups`); :func:`plan_channels` applies the rule to the
readers' weights and refuses, with :class:`SlimError`, what the group cannot lose safely. The arrays here
are numpy; each backend brings its weights in its own layout as ``(units, ...)`` arrays.

>>> import numpy as np
>>> g = ChannelGroup(4, producers=["fc1"], readers=[("fc2", 1)])
>>> plan_channels(g, {"fc2": np.array([[1.0, 2.0], [0, 0], [3, 0], [0, 0]])})
([1, 3], array([0, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import NcPruneError


class SlimError(NcPruneError, ValueError):
    """The model cannot be slimmed as it is; nothing was changed."""


@dataclass
class Removal:
    """What was (or would be) cut from one module."""

    name: str
    kind: str          # "heads" or "channels"
    before: int
    after: int
    removed: List[int]
    sizes: Dict[str, int] = field(default_factory=dict)  # the module's sizes after: heads, kv_heads, head_dim / inner


@dataclass
class SlimReport:
    """What :func:`model_slim` removed, and what it means for saving."""

    removals: List[Removal] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    config_expresses_it: bool = True
    why_not: List[str] = field(default_factory=list)

    @property
    def removed(self) -> Dict[str, int]:
        """``{"heads": n, "channels": m}`` removed in all."""
        out: Dict[str, int] = {}
        for r in self.removals:
            out[r.kind] = out.get(r.kind, 0) + len(r.removed)
        return out

    def __str__(self) -> str:
        cut = ", ".join(f"{n} {k}" for k, n in self.removed.items()) or "nothing"
        lines = [f"slimmed: {cut} removed; parameters {self.params_before:,} -> {self.params_after:,} "
                 f"({1 - self.params_after / max(self.params_before, 1):.1%} fewer)"]
        lines += [f"  {r.name}: {r.kind} {r.before} -> {r.after}" for r in self.removals if r.removed]
        if not self.config_expresses_it:
            lines.append("  the config cannot express it (" + "; ".join(self.why_not) + "): save_pretrained writes "
                         "the sizes under config.nc_prune_slim, load it with nc_prune.torch.load_slimmed(dir)")
        return "\n".join(lines)


# ---- the rule ------------------------------------------------------------------------------------------
def zero_units(weights: np.ndarray) -> np.ndarray:
    """Per unit (axis 0 of ``weights``): whether all its weights are zero."""
    w = np.asarray(weights)
    return (w.reshape(w.shape[0], -1) == 0).all(axis=1)


def keep_index(n: int, removed: Sequence[int]) -> np.ndarray:
    """The units of ``n`` that stay, in order."""
    gone = set(int(i) for i in removed)
    return np.array([i for i in range(n) if i not in gone], dtype=np.int64)


def removable(dead: np.ndarray, min_keep: int = 0) -> Tuple[List[int], np.ndarray]:
    """``(removed, keep)`` for the units marked ``dead``, keeping the first ``min_keep`` dead ones when
    nothing else would stay (a layer that cannot have zero units keeps a dead one: it adds nothing)."""
    dead = np.asarray(dead, dtype=bool).copy()
    spare = int(min_keep) - int((~dead).sum())
    if spare > 0:
        dead[np.flatnonzero(dead)[:spare]] = False
    removed = np.flatnonzero(dead).tolist()
    return removed, keep_index(dead.size, removed)


# ---- channels across layers ------------------------------------------------------------------------------
@dataclass
class ChannelGroup:
    """The layers one set of channels passes through; channel ``c`` is one unit of all of them.

    Attributes:
        channels: how many channels.
        producers: layers writing them (their output units / filters).
        depthwise: depthwise convolutions on the way (filter ``c`` reads channel ``c`` only).
        norms: per-channel normalizations on the way (BatchNorm: its gamma, beta and statistics).
        readers: ``(layer, positions)`` reading them as input features; after a flatten each channel is read
            at ``positions`` places.
        whole: what reads every channel and cannot lose one (the model output, an attention layer): while
            anything does, no channel of the group is dead.
        why_not: why the group's channels cannot be removed even when dead (each reason names the layer,
            what it is and what to do).
    """

    channels: int
    producers: List[str] = field(default_factory=list)
    depthwise: List[str] = field(default_factory=list)
    norms: List[str] = field(default_factory=list)
    readers: List[Tuple[str, int]] = field(default_factory=list)
    whole: List[str] = field(default_factory=list)
    why_not: List[str] = field(default_factory=list)

    def absorb(self, other: "ChannelGroup") -> None:
        """Take ``other``'s layers: the two are the same channels (they are added, multiplied, ...)."""
        if other.channels != self.channels:
            self.why_not.append(f"{self.channels} channels are merged with {other.channels} channels "
                                f"(broadcasting); make both sides the same width")
        for name in ("producers", "depthwise", "norms", "readers", "whole", "why_not"):
            mine = getattr(self, name)
            mine.extend(x for x in getattr(other, name) if x not in mine)

    def add(self, member: str, item) -> None:
        """Append ``item`` to the ``member`` list once."""
        items = getattr(self, member)
        if item not in items:
            items.append(item)


class ChannelGroups:
    """Groups by id; merging two leaves one group that both ids reach."""

    def __init__(self, group_type: Optional[type] = None) -> None:
        self._type = group_type or ChannelGroup  # a backend's subclass, with what it adds
        self._groups: Dict[int, ChannelGroup] = {}
        self._alias: Dict[int, int] = {}

    def new(self, channels: int, why_not: Optional[str] = None) -> int:
        gid = len(self._alias)
        self._alias[gid] = gid
        self._groups[gid] = self._type(int(channels), why_not=[why_not] if why_not else [])
        return gid

    def root(self, gid: int) -> int:
        path = []
        while self._alias[gid] != gid:
            path.append(gid)
            gid = self._alias[gid]
        for p in path:
            self._alias[p] = gid
        return gid

    def __getitem__(self, gid: int) -> ChannelGroup:
        return self._groups[self.root(gid)]

    def merge(self, a: int, b: int) -> int:
        a, b = self.root(a), self.root(b)
        if a != b:
            self._groups[a].absorb(self._groups.pop(b))
            self._alias[b] = a
        return a

    def all(self) -> List[ChannelGroup]:
        return list(self._groups.values())


def _listed(units: Sequence[int]) -> str:
    return str(list(units[:8]))[:-1] + (", ...]" if len(units) > 8 else "]")


def plan_channels(group: ChannelGroup, reads: Mapping[str, np.ndarray], min_keep: int = 0
                  ) -> Optional[Tuple[List[int], np.ndarray]]:
    """``(removed channels, kept channels)`` of a group, or None when none can go.

    A channel is dead when every reader's weights for it are zero; ``reads`` holds, per reader, its weights
    as ``(channels, ...)``. A group nothing cuttable writes, nothing reads, or something reads whole loses
    nothing. Dead channels of a group with a reason in ``why_not`` raise :class:`SlimError` with the reasons.
    """
    if not group.producers or not group.readers or group.whole:
        return None
    dead = np.ones(group.channels, dtype=bool)
    for name, _ in group.readers:
        dead &= zero_units(reads[name])
    if not dead.any():
        return None
    removed, keep = removable(dead, min_keep)
    if group.why_not:
        raise SlimError(
            f"channels {_listed(np.flatnonzero(dead).tolist())} of {', '.join(group.producers)} are zero in every "
            f"layer reading them ({', '.join(r for r, _ in group.readers)}), but cannot be removed: "
            f"{'; '.join(group.why_not)}. Nothing was changed; either change that, or leave these channels "
            f"unpruned (exclude the readers from channel pruning with excluded_op_names)")
    return (removed, keep) if removed else None


def channel_removal(group: ChannelGroup, removed: List[int], keep: np.ndarray) -> Removal:
    return Removal(", ".join(group.producers), "channels", group.channels, int(keep.size), removed,
                   {"channels": int(keep.size)})
