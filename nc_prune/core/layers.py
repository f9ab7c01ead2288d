"""Which layers a pruner group takes: INC's selection rules, shared by every backend.

1. ``pruning_op_types``: a layer is a candidate when one of the strings is a substring of one of its
   type names (``"Conv"`` matches ``Conv2d`` and ``Conv1D``). Backends add aliases: a Keras ``Dense``
   also answers to ``"Linear"``.
2. ``op_names``: regexes searched in the layer name (``re.search``); an empty list takes every candidate.
3. ``excluded_op_names``: regexes that remove layers again.
4. The classifier head — the last linear layer of the model — is left out unless named on purpose: an
   ``op_names`` regex matches its whole name and no other layer's (``"lm_head"``, not ``".*"``). With
   ``parameters={"coupled": True}`` it may join a coupled unit as its reader (the filters of the last conv,
   read by the classifier after pooling) and lose that unit's input columns; its outputs are never pruned.
5. A frozen weight (``requires_grad=False`` / ``trainable=False``) and a weight shared with another module
   (tied embeddings, one Parameter used twice) are left out, with the reason, unless named on purpose in
   the same way: then it is pruned on purpose, once.

A layer claimed by two groups, and a group that selects nothing, are errors. :func:`plan_layers` also
records *why* every other layer stays dense, as data (:class:`Decision`), for reports and the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError, NoPrunableLayerError, warn_user
from .patterns.base import get_pattern


@dataclass(frozen=True)
class LayerInfo:
    """What the selection rules need to know of one prunable weight.

    Attributes:
        name: the layer's path (``"encoder.0.fc1"``; for a layer with several weights, ``"mha/query"``).
        type_names: class name first, then aliases matched by ``pruning_op_types``.
        shape: the weight's shape in the canonical layout ``(out, in, *kernel)``.
        is_linear: a fully connected layer (the head is the last of these).
        trainable: False for a frozen weight (``requires_grad=False``, Keras ``trainable=False``).
        shared_with: the other owners of the same weight (``"transformer.wte.weight"``), if any.
    """

    name: str
    type_names: Tuple[str, ...]
    shape: Tuple[int, ...]
    is_linear: bool = False
    trainable: bool = True
    shared_with: Tuple[str, ...] = ()
    extra: Dict[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Decision:
    """What the selection made of one layer: the group that prunes it, or None and why it stays dense."""

    group: Optional[int]
    reason: str = ""
    hint: str = ""

    @property
    def pruned(self) -> bool:
        return self.group is not None


@dataclass
class LayerPlan:
    """The outcome of layer selection: each group's layers, and a :class:`Decision` for every layer.

    ``couplings[i]`` are the couplings (heads, channels spanning layers) group ``i``'s pattern prunes; their
    member layers are in ``groups[i]``, brought in by the layers the group selected.
    """

    groups: List[List[LayerInfo]]
    decisions: Dict[str, Decision]
    couplings: List[List[Any]] = field(default_factory=list)

    def dense(self) -> Dict[str, str]:
        """``{layer: reason}`` of the layers no group prunes."""
        return {n: d.reason for n, d in self.decisions.items() if not d.pruned}


def head_name(layers: Sequence[LayerInfo]) -> str | None:
    linear = [l.name for l in layers if l.is_linear]
    return linear[-1] if linear else None


def _describe(group: Mapping, index: int) -> str:
    return (f"pruning_configs[{index}] (op_names={group['op_names']}, pruning_op_types={group['pruning_op_types']}, "
            f"excluded_op_names={group['excluded_op_names']})")


#: The rules in the order they are applied; a layer left out by every group keeps the reason of the rule
#: it got furthest to (so a frozen Linear reads "frozen", not "type not in pruning_op_types"). A tied head is
#: "shared" first: that is the reason that costs something (pruning it would zero the embedding).
_RULES = ("type", "op_names", "excluded", "shared", "frozen", "head")


def _singled_out(layers: Sequence[LayerInfo], group: Mapping) -> frozenset:
    """The layers an ``op_names`` regex names on purpose: it matches the layer's whole name and no other's.

    ``".*"`` (INC users' "everything") names no layer on purpose; ``"lm_head"`` or ``"he.d"`` does.
    """
    out = set()
    for pattern in group["op_names"]:
        hits = [l.name for l in layers if re.fullmatch(pattern, l.name)]
        if len(hits) == 1:
            out.add(hits[0])
    return frozenset(out)


def _why_not(layer: LayerInfo, group: Mapping, head: Optional[str],
             named_on_purpose: frozenset = frozenset()) -> Optional[Tuple[int, str, str]]:
    """``None`` when ``group`` takes ``layer``; else (rule index, reason, how to take it anyway)."""
    names = group["op_names"]
    if not any(t in tn for t in group["pruning_op_types"] for tn in layer.type_names):
        return 0, "type not in pruning_op_types", "add its type to pruning_op_types"
    if names and not any(re.search(p, layer.name) for p in names):
        return 1, "no op_names regex matches", "add a regex matching it to op_names"
    if any(re.search(p, layer.name) for p in group["excluded_op_names"]):
        return 2, "matched by excluded_op_names", "narrow excluded_op_names"
    named = layer.name in named_on_purpose
    exactly = f"name it exactly in op_names ({re.escape(layer.name)!r})"
    if layer.shared_with and not named:
        return 3, f"weight shared with {', '.join(layer.shared_with)}", \
            f"pruning it would zero that too; {exactly} to prune it on purpose, once"
    if not layer.trainable and not named:
        return 4, "frozen", f"requires_grad=False / trainable=False; {exactly} to prune it anyway"
    if layer.name == head and not named:
        return 5, "classifier head", f"the last linear layer is left dense; {exactly} to prune it"
    return None


def select_group(layers: Sequence[LayerInfo], group: Mapping, index: int) -> List[LayerInfo]:
    """The layers one group selects, before shape checks."""
    head = head_name(layers)
    named = _singled_out(layers, group)
    return [layer for layer in layers if _why_not(layer, group, head, named) is None]


def plan_layers(layers: Sequence[LayerInfo], groups: Sequence[Mapping], couplings: Any = ()) -> LayerPlan:
    """Layers of every group, shape-checked against the group's pattern, and why the others stay dense.

    ``couplings`` (a sequence of :class:`~nc_prune.core.coupling.Coupling`, or a function of a group giving
    one) are units spanning layers; a group whose pattern prunes such units (``"mha"``: heads; ``1xchannel``
    on a producer, ``channelx1`` on a consumer: channels) takes every member layer of the couplings its
    selected layers belong to. Warns about layers left dense for a reason the user may not expect (a shape
    that does not fit the pattern, a shared weight).

    Raises:
        NoPrunableLayerError: a group selects nothing, or no layer of a group fits its pattern.
        ConfigError: a layer is selected by two groups.
    """
    head = head_name(layers)
    by_name = {layer.name: layer for layer in layers}
    claimed: Dict[str, int] = {}
    misfit: Dict[str, str] = {}
    coupled_with: Dict[str, str] = {}
    untouched: Dict[str, str] = {}
    plans, used = [], []
    for i, group in enumerate(groups):
        chosen = select_group(layers, group, i)
        if not chosen:
            raise NoPrunableLayerError(_nothing_selected(layers, group, i, head))
        pattern = get_pattern(group)
        names = {layer.name for layer in chosen}
        offered = couplings(group) if callable(couplings) else couplings
        named_here = _singled_out(layers, group)

        asked_to_couple = group.get("parameters", {}).get("coupled") is True

        def kept_out(layer_name: str, coupling) -> bool:  # excluded, frozen or shared: never pulled in as a partner
            layer = by_name[layer_name]
            if any(re.search(p, layer_name) for p in group["excluded_op_names"]):
                return True
            # with coupled=True the head may join as a unit's reader: it loses the unit's input columns, its
            # outputs stay whole (the channels feeding a classifier go, as in every channel pruner); by default
            # it is left dense, as INC leaves it
            reads_only = asked_to_couple and all(s.axis == "in" for s in coupling.slices if s.layer == layer_name)
            return layer_name not in named_here and ((layer_name == head and not reads_only) or not layer.trainable
                                                     or bool(layer.shared_with))

        mine = [c for c in offered if pattern.prunes_coupling(c, names) and all(l in by_name for l in c.layers)
                and not any(kept_out(l, c) for l in c.layers if l not in names)]
        covered = {l for c in mine for l in c.layers}
        whole = {a: c.name for c in mine for a in c.anchors if a not in covered}  # part of a unit, never cut
        chosen = [layer for layer in chosen if layer.name not in whole]
        for name, coupling in whole.items():
            untouched[name] = coupling
        for c in mine:
            for l in c.layers:
                if l not in names:  # a partner the group did not select: pruned with the unit it shares
                    chosen.append(by_name[l])
                    names.add(l)
                    coupled_with[l] = c.name
        used.append(mine)
        fitting = []
        for layer in chosen:
            if layer.name in claimed:
                raise ConfigError(
                    f"layer {layer.name!r} is selected by pruning_configs[{claimed[layer.name]}] and "
                    f"pruning_configs[{i}]; each layer may belong to one group — narrow op_names or add "
                    f"excluded_op_names"
                )
            claimed[layer.name] = i
            reason = None if layer.name in covered else pattern.check_shape(layer.name, layer.shape)
            if reason:
                misfit[layer.name] = reason
                warn_user(f"{reason}; layer {layer.name!r} is left dense")
            else:
                fitting.append(layer)
        if not fitting:
            raise NoPrunableLayerError(
                f"{_describe(group, i)}: none of the selected layers fits pattern {group['pattern']!r}: "
                + ", ".join(f"{l.name} {l.shape}" for l in chosen)
            )
        plans.append(fitting)
    decisions: Dict[str, Decision] = {}
    singled = [_singled_out(layers, g) for g in groups]
    for layer in layers:
        if layer.name in misfit:
            decisions[layer.name] = Decision(None, "shape does not fit the pattern", misfit[layer.name])
        elif layer.name in untouched and layer.name not in claimed:
            decisions[layer.name] = Decision(None, f"kept whole by {untouched[layer.name]}",
                                             "the units it belongs to leave this layer as it is")
        elif layer.name in claimed:
            decisions[layer.name] = Decision(claimed[layer.name], f"coupled with {coupled_with[layer.name]}"
                                             if layer.name in coupled_with else "")
        else:
            rule, reason, hint = max(_why_not(layer, g, head, named) for g, named in zip(groups, singled))
            decisions[layer.name] = Decision(None, reason, hint)
            asked = any(any(re.search(p, layer.name) for p in g["op_names"]) for g in groups)
            if _RULES[rule] == "shared" and (layer.name != head or asked):  # an unasked tied head: dense anyway
                warn_user(f"layer {layer.name!r} is left dense: its {reason} ({hint})")
    return LayerPlan(plans, decisions, used)


def plan_groups(layers: Sequence[LayerInfo], groups: Sequence[Mapping]) -> List[List[LayerInfo]]:
    """The layers of every group (:func:`plan_layers` without the decisions)."""
    return plan_layers(layers, groups).groups


def _nothing_selected(layers: Sequence[LayerInfo], group: Mapping, i: int, head: Optional[str]) -> str:
    sample = ", ".join(f"{l.name} ({l.type_names[0]})" for l in layers[:12]) or "none"
    more = f" and {len(layers) - 12} more" if len(layers) > 12 else ""
    reasons: Dict[str, List[str]] = {}
    named = _singled_out(layers, group)
    for layer in layers:
        why = _why_not(layer, group, head, named)
        if why is not None and _RULES[why[0]] in ("shared", "frozen"):  # say so when that was all it found
            reasons.setdefault(_RULES[why[0]], []).append(layer.name)
    told = "".join(f"; left out as {kind}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
                   for kind, names in reasons.items())
    return (f"{_describe(group, i)} selects no layer. Prunable layers of the model: {sample}{more}{told}. "
            f"Fix op_names / pruning_op_types / excluded_op_names"
            + (f" (the head {head!r} is excluded unless an op_names regex matches its full name)" if head else "")
            + (" — or name a frozen or shared layer exactly in op_names to prune it on purpose" if told else ""))
