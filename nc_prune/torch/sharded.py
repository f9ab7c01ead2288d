"""Masks of FSDP2-sharded weights (``torch.distributed.fsdp.fully_shard``: DTensor parameters, ``Shard(0)``).

Each rank holds a slice of rows of every weight, and keeps its masks and scores as DTensors sharded the
same way (so per rank they take the memory of its shard, and ``torch.distributed.checkpoint`` saves them
sharded). The units of the pattern follow the rows of the *whole* weight: a rank's rows must start and end
on a block boundary (``4x1``: row shards a multiple of 4), which is checked with an error naming the layer.

Selection — local or global scope — is the radix select of :mod:`nc_prune.core.selection` run on each
rank's own unit scores, with each digit's per-layer histograms summed over the ranks by one ``all_reduce``
(three for float32 scores), and the tied units at the threshold given out in row order with one
``all_gather`` of per-layer counts. No rank ever holds another rank's scores, and the masks are the ones a
single process computes on the whole weights.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..core import selection
from ..core.errors import ConfigError, PatternShapeError, warn_user
from ..core.patterns.base import Pattern, _unit_scores
from ..core.patterns.nxm import PatternNxM
from ..core.selection import Cut, Cutter, count_at_least, count_for_ratio, global_cuts, layer_cut


def dtensor_type() -> Optional[type]:
    if not torch.distributed.is_available():
        return None
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - very old torch
        return None
    return DTensor


def is_sharded(t: Any) -> bool:
    cls = dtensor_type()
    return cls is not None and isinstance(t, cls)


def local(t: Any) -> Any:
    """A DTensor's local shard (the tensor itself otherwise)."""
    return t.to_local() if is_sharded(t) else t


def like_weight(local_value: torch.Tensor, weight: Any) -> Any:
    """``local_value`` (the shape of ``weight``'s shard) as a DTensor sharded like ``weight``."""
    cls = dtensor_type()
    return cls.from_local(local_value, weight.device_mesh, weight.placements, run_check=False,
                          shape=weight.shape, stride=weight.stride())


def row_offset(name: str, weight: Any) -> Tuple[int, int]:
    """``(first row, rows)`` of this rank's shard of a DTensor weight sharded on dim 0 — else an error."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = tuple(weight.placements)
    if weight.device_mesh.ndim != 1 or len(placements) != 1 or not isinstance(placements[0], Shard) \
            or placements[0].dim != 0:
        raise ConfigError(
            f"layer {name!r}: its weight is a DTensor placed {placements} on a {weight.device_mesh.ndim}-D mesh; "
            f"nc_prune prunes sharded weights placed (Shard(0),) on a 1-D mesh (what fully_shard does). Leave the "
            f"layer out with excluded_op_names, or shard it with fully_shard")
    shape, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, placements)
    return int(offset[0]), int(shape[0])


def check_geometry(pattern: Pattern, name: str, weight: Any, transposed: bool) -> None:
    """Refuse a shard whose rows cut through the pattern's units."""
    if transposed:
        raise ConfigError(
            f"layer {name!r} stores its weight transposed (transformers' Conv1D, (in, out)), so FSDP2's row shards "
            f"split its inputs, not its outputs; leave it out with excluded_op_names or replace it with nn.Linear")
    start, rows = row_offset(name, weight)
    if isinstance(pattern, PatternNxM):
        try:
            block = pattern.layer_units(name, tuple(weight.shape)).block_size()[0]
        except PatternShapeError:
            return  # the whole layer does not fit: it stays dense, as without sharding
        if start % block or rows % block:
            raise PatternShapeError(
                f"layer {name!r}: this rank holds rows {start}..{start + rows - 1} of its {tuple(weight.shape)} "
                f"weight, which cuts through the {block}-row blocks of pattern {pattern.pattern!r}. Make the row "
                f"shards a multiple of {block}: fully_shard splits dim 0 into chunks of ceil(rows / world_size), "
                f"so choose a world size (or a layer width) with ceil({weight.shape[0]} / world_size) divisible by "
                f"{block}, or leave the layer out with excluded_op_names")


def _sum(group: Any):
    import torch.distributed as dist

    from .distributed import note

    def reduce(counts: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
        note("all_reduce", t)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return t.numpy()
    return reduce


def sharded_masks(pattern: Pattern, scores: Mapping[str, np.ndarray], weights: Mapping[str, Any],
                  target: float, pre: Mapping[str, np.ndarray], max_ratio: Optional[float], group: Any = None
                  ) -> Dict[str, np.ndarray]:
    """Keep-masks of each rank's shard, equal to :meth:`Pattern.get_masks` of the whole weights.

    ``scores`` and ``pre`` hold this rank's shard (canonical numpy), ``weights`` the DTensor weights (for the
    whole shapes and this rank's rows). Every rank must call this with the same layers, in the same order.
    """
    import torch.distributed as dist

    from .distributed import note

    if not 0.0 <= float(target) <= 1.0:
        raise ConfigError(f"target sparsity {target!r} is outside [0, 1]")
    if getattr(pattern, "couplings", None):
        raise ConfigError("heads and channels spanning several layers cannot be pruned on FSDP2-sharded weights yet; "
                          "use an NxM or N:M pattern, or prune before sharding")
    reduce = _sum(group)
    max_ratio = pattern.max_sparsity_ratio_per_op if max_ratio is None else float(max_ratio)
    min_ratio = min(pattern.min_sparsity_ratio_per_op, max_ratio)
    whole = pattern._fitting({n: SimpleNamespace(shape=tuple(weights[n].shape)) for n in scores})
    names = list(whole)
    units = {}
    for n in names:
        rows = scores[n].shape[0]
        units[n] = pattern.layer_units(n, scores[n].shape) if rows else None
    done_local = np.array([0 if units[n] is None or n not in pre else
                           int(np.count_nonzero(units[n].already_pruned(pre[n]))) for n in names], dtype=np.int64)
    done = reduce(done_local) if names else done_local
    sizes, lo, hi, sources, unit_sizes = [], [], [], [], []
    local_units: Dict[str, np.ndarray] = {}
    for i, n in enumerate(names):
        lu = whole[n]
        count = lu.n_units
        lo_l = count_at_least(count, min(1.0, min_ratio * lu.ratio_scale))
        hi_l = count_for_ratio(count, min(1.0, max_ratio * lu.ratio_scale))
        if not pattern.is_global:
            want = count_for_ratio(count, min(1.0, float(target) * lu.ratio_scale))
            lo_l = hi_l = min(max(want, lo_l), hi_l)
        if units[n] is None:
            local_units[n] = np.zeros(0, dtype=np.float32)
        else:
            u, d = units[n].reduce(scores[n], pattern.reduce_type, pre.get(n)), None
            if n in pre:
                d = units[n].already_pruned(pre[n])
            local_units[n] = _unit_scores(u, d, n, bool(done[i] > 0))
        sources.append(local_units[n])
        sizes.append(count)
        lo.append(max(lo_l, int(done[i])))
        hi.append(max(hi_l, int(done[i])))
        unit_sizes.append(lu.unit_size)
    if not names:
        return {n: np.ones(scores[n].shape, dtype=bool) for n in scores}
    cache = selection.cache_budget(max(int(np.prod(weights[n].shape)) for n in names))
    if pattern.is_global:
        w = None if pattern.global_target == "units" or len(set(unit_sizes)) <= 1 else unit_sizes
        if w is None:
            k = count_for_ratio(sum(sizes), min(1.0, float(target) * whole[names[0]].ratio_scale))
        else:
            k = count_for_ratio(sum(int(np.prod(weights[n].shape)) for n in names), min(1.0, float(target)))
        most = sum(h * x for h, x in zip(hi, w or [1] * len(hi)))
        if k > most:
            warn_user(f"target sparsity {target} needs {k} pruned units but max_sparsity_ratio_per_op={max_ratio} "
                      f"allows {most}; pruning {most}")
        cuts, _ = global_cuts(sources, sizes, k, lo, hi, cache, w, reduce=reduce)
    else:
        cuts = [layer_cut(src, c, n, cache, reduce) for src, c, n in zip(sources, lo, sizes)]
    # ties at the threshold go to the first units of the whole layer: this rank takes those its rows hold
    eq = torch.tensor([[row_offset(n, weights[n])[0], 0 if c.value is None else
                        int(np.count_nonzero(local_units[n] == c.value))] for n, c in zip(names, cuts)],
                      dtype=torch.int64)
    every = [torch.zeros_like(eq) for _ in range(dist.get_world_size(group))]
    note("all_gather", eq)
    dist.all_gather(every, eq, group=group)
    out: Dict[str, np.ndarray] = {}
    for i, (n, c) in enumerate(zip(names, cuts)):
        mine = int(eq[i, 0])
        before = sum(int(e[i, 1]) for e in every if int(e[i, 0]) < mine)
        cut = c if c.value is None else Cut(c.count, c.value, int(min(max(c.ties - before, 0), eq[i, 1])))
        if units[n] is None:
            out[n] = np.ones(scores[n].shape, dtype=bool)
            continue
        prune = units[n].expand(Cutter(cut)(local_units[n]))
        keep = ~prune
        if n in pre:
            keep &= pre[n]
        out[n] = keep
    for n in scores:
        out.setdefault(n, np.ones(scores[n].shape, dtype=bool) if n not in pre else pre[n].copy())
    return out


def sharded_report(state: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]],
                   dense: Mapping[str, Mapping[str, Any]], order: Any, group: Any = None):
    """The whole model's :class:`~nc_prune.core.report.SparsityReport` on every rank of an FSDP2 model.

    ``state`` is the root's ``state_dict(keep_vars=True)`` (DTensor weights and masks), ``layers`` / ``dense``
    its plan records, ``order`` the layer names in report order. Each rank counts the zeros of its own rows,
    and the pruned units of its own mask rows (its rows hold whole units: :func:`check_geometry`); one
    ``all_reduce`` of two integers per sharded layer sums them. Nothing is gathered: a rank reads its shard
    only. A weight that is not sharded is counted whole by every rank and left out of the sum. Every rank
    must call it (it is a collective), as for any FSDP2 state.
    """
    import torch.distributed as dist

    from ..core.patterns.base import get_pattern
    from ..core.report import LayerSparsity, SparsityReport

    from .distributed import active_group, note
    from .state import MASK_SUFFIX

    records = {**dense, **layers}
    counts = torch.zeros((len(order), 2), dtype=torch.int64)
    sharded = torch.zeros(len(order), dtype=torch.bool)
    facts = []
    for i, name in enumerate(order):
        record = records[name]
        weight = state[record["key"]]
        w = local(weight.detach())
        counts[i, 0] = w.numel() - int(torch.count_nonzero(w))
        sharded[i] = is_sharded(weight)
        shape = tuple(weight.shape)
        units = 0
        if name in layers:
            if record.get("layout") == "transposed":
                raise ConfigError(f"layer {name!r} is stored transposed; a report of a sharded model reads "
                                  f"canonical (out, in) weights only")
            pattern = get_pattern({"pattern": record["pattern"]})
            units = pattern.layer_units(name, shape).n_units
            mask = local(state[record["key"] + MASK_SUFFIX]).detach().cpu().numpy()
            if mask.shape[0]:
                counts[i, 1] = int(np.count_nonzero(pattern.layer_units(name, mask.shape).already_pruned(mask)))
        facts.append((name, shape, int(np.prod(shape)), units))
    group_ = active_group(group)
    if bool(sharded.any()) and group_ is not False:
        part = torch.where(sharded[:, None], counts, torch.zeros_like(counts))
        note("all_reduce", part)
        dist.all_reduce(part, op=dist.ReduceOp.SUM, group=group_)
        counts = torch.where(sharded[:, None], part, counts)
    rows = []
    for (name, shape, params, units), (zeros, pruned) in zip(facts, counts.tolist()):
        pattern = layers[name]["pattern"] if name in layers else "-"
        note = "" if name in layers else dense[name].get("note", "")
        rows.append(LayerSparsity(name, shape, params, int(zeros), pattern, note, units if name in layers else 0,
                                  int(pruned)))
    return SparsityReport(rows)
