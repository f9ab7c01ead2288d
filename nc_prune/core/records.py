"""What was pruned how: the per-layer record a checkpoint carries, and the check that it fits a config.

A checkpoint saved during pruning holds masks. Loaded under a different config (``4x1`` at 75 % into a
``2:4`` at 50 % run), those masks would be mixed with the new plan and give neither. So every backend saves,
beside the masks, one record per pruned layer — its group's pattern, pruning type, target and scope — and
refuses a checkpoint whose records disagree with the live ones, naming each layer and both plans. With
``resume_from_pruned_checkpoint=True`` (INC's flag for continuing from a pruned model) it re-plans instead:
the weights are loaded, the checkpoint's masks are dropped and the weights' zeros become the new masks.

>>> live = {"fc": {"group": 0, "pattern": "2:4", "pruning_type": "magnitude", "target_sparsity": 0.5,
...                "pruning_scope": "global"}}
>>> saved = {"fc": dict(live["fc"], pattern="4x1", target_sparsity=0.75)}
>>> print(conflicts(saved, live)["fc"])
layer 'fc': saved with pattern '4x1', target 0.75, magnitude, global scope; now pattern '2:4', target 0.5, magnitude, global scope
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .coupling import member_specs
from .errors import PruningStateError
from .report import SparsityReport

#: The keys two layer records must share. The schedule may change between runs, and so may the target as long
#: as it does not fall below the saved one (masks only grow, so a lower target could never be reached).
PLAN_KEYS = ("pattern", "pruning_type", "pruning_scope")
TARGET = "target_sparsity"
VERSION = 1


def layer_records(groups: Sequence[Mapping[str, Any]], layers: Sequence[Iterable[str]],
                  extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """``{layer: record}`` for each resolved group config and the layer names it prunes; ``extra[layer]``
    adds backend facts (layout, the re-plan flag)."""
    out: Dict[str, Dict[str, Any]] = {}
    for index, (group, names) in enumerate(zip(groups, layers)):
        for name in names:
            record: Dict[str, Any] = {"group": index}
            record.update({k: group[k] for k in PLAN_KEYS + (TARGET,)})
            record.update((extra or {}).get(name, {}))
            out[name] = record
    return out


def session_records(session: Any, extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """:func:`layer_records` of a :class:`~nc_prune.core.session.PruningSession`'s pruners; a layer that is a
    member of a coupling (a head, a channel across layers) also records its share of the coupling's units."""
    out = layer_records([p.config for p in session.pruners], [list(p.modules) for p in session.pruners], extra)
    for p in session.pruners:
        for name, spec in member_specs(p.couplings).items():
            out[name]["coupling"] = spec
    return out


def encode(layers: Mapping[str, Mapping[str, Any]], dense: Optional[Mapping[str, Mapping[str, Any]]] = None) -> bytes:
    """The records as UTF-8 JSON (sorted keys, so equal plans give equal bytes). ``dense`` records the layers no
    group prunes (their ``note``: why), so a report from a checkpoint alone lists what the live report lists."""
    return json.dumps({"version": VERSION, "layers": layers, "dense": dense or {}}, sort_keys=True,
                      separators=(",", ":")).encode()


def decode(data: bytes) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """``(layers, dense)`` from :func:`encode`'s bytes; an unreadable record is a :class:`PruningStateError`."""
    try:
        parsed = json.loads(bytes(data).decode())
        layers, dense = parsed["layers"], parsed.get("dense", {})
        if not isinstance(layers, dict) or not isinstance(dense, dict):
            raise TypeError("layers is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise PruningStateError(f"the checkpoint's pruning record is unreadable ({exc}); was it written by "
                                f"nc_prune?") from None
    return layers, dense


def report(weights: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]],
           dense: Mapping[str, Mapping[str, Any]], masks: Mapping[str, Any]) -> SparsityReport:
    """The sparsity report of a model from its canonical weights and masks and its records — the one way every
    report is made, live or from a checkpoint file, so the two print the same table."""
    return SparsityReport.from_arrays(dict(weights), {n: r["pattern"] for n, r in layers.items()},
                                      {n: r.get("note", "") for n, r in dense.items()}, dict(masks),
                                      {n: r["coupling"] for n, r in layers.items() if "coupling" in r})


def _plan(record: Mapping[str, Any]) -> str:
    return (f"pattern {record.get('pattern')!r}, target {record.get('target_sparsity')}, "
            f"{record.get('pruning_type')}, {record.get('pruning_scope')} scope")


def conflicts(saved: Mapping[str, Mapping[str, Any]], live: Mapping[str, Mapping[str, Any]]) -> Dict[str, str]:
    """``{layer: what differs}`` for each layer whose saved plan differs from the live one, or that only one
    of them prunes."""
    out: Dict[str, str] = {}
    for name in list(live) + [n for n in saved if n not in live]:
        a, b = saved.get(name), live.get(name)
        if a is None:
            out[name] = f"layer {name!r}: not pruned in the checkpoint; now {_plan(b)}"
        elif b is None:
            out[name] = f"layer {name!r}: saved with {_plan(a)}; not pruned by this config"
        elif any(a.get(k) != b.get(k) for k in PLAN_KEYS) or a.get(TARGET, 0) > b.get(TARGET, 0):
            out[name] = f"layer {name!r}: saved with {_plan(a)}; now {_plan(b)}"
    return out


def mismatch_error(lines: Sequence[str], what: str) -> PruningStateError:
    """The refusal: ``what`` (``"this checkpoint"``) was pruned under another plan, layer by layer, and the ways out."""
    shown = "; ".join(lines[:6]) + (f"; and {len(lines) - 6} more" if len(lines) > 6 else "")
    return PruningStateError(
        f"{what} was pruned under a different plan than this config: {shown}. Its masks would mix with the new "
        f"plan and reach neither. Use the config it was pruned with, or set resume_from_pruned_checkpoint=True "
        f"to re-plan: the weights are loaded, their zeros become the masks and the new schedule goes on from them"
    )
