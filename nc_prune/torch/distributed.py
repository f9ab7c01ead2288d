"""Pruning under ``torch.distributed``: data-parallel (DDP) consistency checks and reductions.

Under ``DistributedDataParallel`` every rank holds the whole model, and the gradients are all-reduced
during ``backward()`` — before ``optimizer.step()`` runs nc_prune's step hooks — so gradient scores, and
the masks computed from them, are the same on every rank without any extra communication. What this
module adds:

* :func:`check_masks`: after every mask update, one ``all_reduce`` of two integers per layer (a count and
  a position hash of its pruned weights) tells whether the ranks still agree; a rank that diverged —
  weights, scores or masks changed on one rank only — raises :class:`RankMismatchError` on every rank,
  naming the layers. ``prepare_pruning(..., check_masks_across_ranks=False)`` turns it off.
* :func:`average_`: one-shot gradient scores on a model that is *not* wrapped in DDP (each rank runs its own
  batches) average the gradients over the ranks before folding them in, as DDP would have.
* :func:`sum_stats_`: activation statistics (``retrain_free``'s input Hessians, ``sparse_gpt``'s Hessians and
  ``wanda``'s squared input norms, block by block) are summed with their token counts over the ranks, so
  they equal the statistics of all ranks' batches in one process.
* :func:`agree`: a calibration batch refused on one rank stops every rank (none is left in a collective).

Every collective here is ``torch.distributed``'s own, on the process group given (default: the world).
Nothing runs when ``torch.distributed`` is not initialized or the group has one rank.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.errors import ConfigError, PruningStateError
from ..core.session import as_config

#: Weights hashed per piece by :func:`mask_checksums` (bounds its int64 temporaries to 8 MiB).
_PIECE = 1 << 20
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64: multiplying by it mixes the bits


class RankMismatchError(PruningStateError):
    """The ranks of a distributed run hold different masks for a layer."""


# ---- what nc_prune sends: bytes per collective ---------------------------------------------------------
class CollectiveLog:
    """Bytes nc_prune passed to ``torch.distributed`` collectives (per rank, the tensors it handed in) while a
    :func:`count_collectives` block ran: ``bytes[op]`` and ``calls[op]`` for ``all_reduce`` / ``all_gather``."""

    def __init__(self) -> None:
        self.bytes: Dict[str, int] = {}
        self.calls: Dict[str, int] = {}

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


_LOGS: List[CollectiveLog] = []


@contextmanager
def count_collectives() -> Iterator[CollectiveLog]:
    """Count what nc_prune's own collectives send inside the block (e.g. one mask update), on this rank.

    Only nc_prune's call sites report (each calls :func:`note`); ``torch.distributed`` is not wrapped, so the
    gradients DDP or FSDP reduce are not in it.
    """
    log = CollectiveLog()
    _LOGS.append(log)
    try:
        yield log
    finally:
        _LOGS.remove(log)


def note(op: str, *tensors: Any) -> None:
    """Record a collective about to run on ``tensors`` (a no-op outside :func:`count_collectives`)."""
    if _LOGS:
        size = sum(int(t.numel()) * t.element_size() for t in tensors)
        for log in _LOGS:
            log.bytes[op] = log.bytes.get(op, 0) + size
            log.calls[op] = log.calls.get(op, 0) + 1


def active_group(process_group: Any = None) -> Optional[Any]:
    """The process group to reduce over (``None`` = the default world), or ``False`` when there is nothing to
    reduce: ``torch.distributed`` is unavailable, not initialized, or the group has a single rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    if dist.get_world_size(process_group) <= 1:
        return False
    return process_group


def is_data_parallel(model: nn.Module) -> bool:
    """``model`` is (or wraps, through ``torch.compile``) a ``DistributedDataParallel``: its backward reduces."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return True
        inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        if not isinstance(inner, nn.Module):
            return False
        model = inner


# ---- config names written for the wrapper ("module.fc1") ---------------------------------------------
_PREFIX = re.compile(r"^(\^?)((?:(?:module|_orig_mod)(?:\\\.|\.))+)")


def strip_wrapper_prefixes(config: Any, root: nn.Module) -> Any:
    """``config`` with a leading ``module.`` / ``_orig_mod.`` removed from its ``op_names`` and
    ``excluded_op_names`` regexes — the names ``DistributedDataParallel(model)`` and ``torch.compile(model)``
    give the layers — so a config written from either spelling selects the same layers of the inner model.

    The config passed is never changed (a new one is returned when a regex was rewritten). Nothing is
    rewritten when the inner model really has a child called ``module`` or ``_orig_mod``.
    """
    config = as_config(config)
    if any(name in root._modules for name in ("module", "_orig_mod")):
        return config

    def fix(patterns: Any) -> Any:
        if not isinstance(patterns, (list, tuple)):
            return patterns
        return [_PREFIX.sub(r"\1", p) if isinstance(p, str) else p for p in patterns]

    data = config.to_dict()
    changed = False
    for holder in [data] + list(data.get("pruning_configs") or []):
        for key in ("op_names", "excluded_op_names"):
            if key in holder:
                new = fix(holder[key])
                if new != holder[key]:
                    holder[key], changed = new, True
    return type(config).from_dict(data) if changed else config


# ---- the mask check ---------------------------------------------------------------------------------
def mask_checksums(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(n_layers, 2)`` int64: per keep-mask the number of pruned entries and a hash of their positions.

    Two masks with the same pruned count but different positions get different hashes (but for a 2**-64
    chance). The integer sums wrap around on overflow, which is harmless: only equality is compared.
    """
    out = torch.zeros((len(masks), 2), dtype=torch.int64)
    for i, mask in enumerate(masks):
        flat = mask.detach().reshape(-1)
        count = total = 0
        for start in range(0, flat.numel(), _PIECE):
            pruned = torch.nonzero(~flat[start:start + _PIECE].cpu(), as_tuple=True)[0].to(torch.int64)
            if pruned.numel():
                pruned += start + 1
                h = pruned * _GOLDEN
                h ^= h >> 29
                count += int(pruned.numel())
                total += int(h.sum())
        out[i, 0] = count
        out[i, 1] = (total + (1 << 63)) % (1 << 64) - (1 << 63)
    return out


def check_masks(masks: Mapping[str, torch.Tensor], process_group: Any = None, when: str = "") -> None:
    """Raise :class:`RankMismatchError` on every rank when the ranks' masks differ for some layer.

    One ``all_reduce(MAX)`` of ``[checksums, -checksums]`` (4 integers per layer): a layer whose maximum
    differs from its minimum differs somewhere. The error names each such layer and its pruned count on
    this rank, with the range over the ranks. Every rank sees the same reduced result, so every rank
    raises together (none is left waiting in a collective).
    """
    import torch.distributed as dist

    group = active_group(process_group)
    if group is False or not masks:
        return
    names = list(masks)
    local = mask_checksums([masks[n] for n in names])
    both = torch.cat([local, -local], dim=1)
    note("all_reduce", both)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    high, low = both[:, :2], -both[:, 2:]
    bad = [i for i in range(len(names)) if not torch.equal(high[i], low[i])]
    if bad:
        rank = dist.get_rank(group)
        layers = "; ".join(
            f"{names[i]!r} (pruned weights: {int(local[i, 0])} on rank {rank}, between {int(low[i, 0])} and "
            f"{int(high[i, 0])} over the ranks{', positions differ' if low[i, 0] == high[i, 0] else ''})"
            for i in bad)
        raise RankMismatchError(
            f"the masks of {len(bad)} layer(s) differ between the ranks of the process group{when}: {layers}. "
            f"Every rank must see the same weights and gradients when masks are computed: wrap the model in "
            f"DistributedDataParallel (its backward averages the gradients), build it from the same seed, and "
            f"change weights, masks or scores on all ranks or none. prepare_pruning(..., "
            f"check_masks_across_ranks=False) skips this check"
        )


# ---- reductions of what each rank computed from its own batches -----------------------------------------
def average_(tensors: Iterable[Optional[torch.Tensor]], process_group: Any = None) -> None:
    """Average tensors over the ranks, in place (``all_reduce(SUM)`` then ``/ world_size``, as DDP does)."""
    import torch.distributed as dist

    group = active_group(process_group)
    if group is False:
        return
    world = dist.get_world_size(group)
    for t in tensors:
        if t is not None:
            note("all_reduce", t)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            t.div_(world)


def sum_stats_(stats: Iterable[Any], process_group: Any = None,
               features: Optional[Mapping[str, Tuple[int, Any]]] = None,
               error: Optional[BaseException] = None) -> None:
    """Sum :class:`~nc_prune.core.oneshot.stats.LayerStats` over the ranks, in place: each sum (``Σ x xᵀ``,
    ``Σ x²``) and the token count, so ``E[x xᵀ] = Σ_ranks Σ x xᵀ / Σ_ranks tokens`` is weighted by the tokens
    every rank saw — the statistics one process would have built from all ranks' batches (up to summation
    order). The token counts of all layers go in one ``all_reduce``, then one ``all_reduce(SUM)`` per sum.

    ``features`` (``{layer: (input features, device)}``) lets a rank whose batches never reached a layer (an
    expert no token was routed to) take part with zero sums; without it such a layer would leave the ranks
    passing different tensors. Every rank must pass the same layers in the same order.

    ``error``: what went wrong on this rank while the statistics were collected (a batch its layers reject).
    One flag per rank travels with the token counts: when any rank failed, every rank raises before the sums
    are reduced — the failing rank its ``error``, the others a :class:`~nc_prune.core.errors.PruningStateError`
    naming the failed ranks — so none waits in a collective the others never reach.
    """
    import torch.distributed as dist

    group = active_group(process_group)
    if group is False:
        if error is not None:
            raise error
        return
    stats = list(stats)
    for s in stats:
        if s.tokens == 0 and features is not None and s.name in features:
            n, device = features[s.name]
            if s.want_hessian and s.xtx is None:
                s.xtx = torch.zeros((n, n), dtype=torch.float32, device=device)
            if s.want_norms and s.sq is None:
                s.sq = torch.zeros((n,), dtype=torch.float32, device=device)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    counts = torch.zeros(len(stats) + world, dtype=torch.int64)
    counts[:len(stats)] = torch.tensor([s.tokens for s in stats], dtype=torch.int64)
    counts[len(stats) + rank] = int(error is not None)
    note("all_reduce", counts)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    if error is not None:
        raise error
    failed = [r for r in range(world) if counts[len(stats) + r]]
    if failed:
        raise PruningStateError(f"collecting the calibration statistics failed on rank(s) {failed} of the process group "
                      f"(see their error); every rank stops here")
    for s, total in zip(stats, counts[:len(stats)].tolist()):
        for a in s.arrays():
            note("all_reduce", a)
            dist.all_reduce(a, op=dist.ReduceOp.SUM, group=group)
        s.tokens = int(total)


def agree(error: Optional[BaseException], process_group: Any = None, what: str = "") -> None:
    """Make a failure on one rank a failure on every rank (one ``all_reduce(MAX)`` of one int64 per rank).

    Call it on every rank after a step that may fail locally (checking the calibration batches): the rank
    that failed re-raises ``error``; the others raise :class:`~nc_prune.core.errors.ConfigError` naming the
    ranks that failed, instead of waiting forever in the next collective.
    """
    import torch.distributed as dist

    group = active_group(process_group)
    if group is False:
        if error is not None:
            raise error
        return
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    flags = torch.zeros(world, dtype=torch.int64)
    flags[rank] = 0 if error is None else 1
    note("all_reduce", flags)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
    if error is not None:
        raise error
    failed = [r for r in range(world) if flags[r]]
    if failed:
        raise ConfigError(f"{what or 'a step'} failed on rank(s) {failed} of the process group (see their error); "
                          f"every rank stops here")
