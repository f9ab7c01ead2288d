"""One-shot pruning from calibration data, block by block: the pipeline behind ``sparse_gpt`` and ``wanda``.

A pretrained transformer is a stack of repeated blocks. Pruning them one at a time keeps memory at the
model plus one block's activations and statistics, and lets each block learn from the inputs the already
pruned blocks before it produce — what SparseGPT and Wanda do:

1. find the blocks: the ``nn.ModuleList`` / ``nn.Sequential`` whose children hold the layers to prune
   (``model.layers`` of Llama, ``transformer.h`` of GPT-2, ``decoder.layers`` of OPT, ``encoder.layer`` of
   BERT, the children of a plain ``nn.Sequential``) — or the one named by ``blocks=``;
2. run the model on the calibration batches until the first block, keeping each batch's inputs to it, with
   all their keyword arguments (attention masks of any padded length, rotary position embeddings, ...);
3. for each block: run it on its inputs with hooks on its layers that fold their inputs into the statistics
   (:class:`~nc_prune.core.oneshot.stats.LayerStats`), prune each layer
   (:meth:`~nc_prune.core.oneshot.pruners.CalibrationPruner.prune_layer`: the maths runs in torch, on the
   weights' device), and run the pruned block again to make the next block's inputs;
4. layers outside the blocks (a head, a pooler) are pruned from a pass of the whole model: those that run
   before the first block with the capture pass, the others after the last block.

Under ``torch.distributed`` (an initialized process group of two ranks or more) each rank feeds its own
calibration batches and the statistics of every block are summed over the ranks with their token counts
(:func:`nc_prune.torch.distributed.sum_stats_`) before its layers are pruned: every rank then prunes from the
statistics of all ranks' batches — the same masks and SparseGPT weights on every rank, equal to one process
fed all the batches — and runs its own batches through the pruned block for the next one.

With ``sparsity_allocation="owl"`` a first pass over the dense blocks measures each block's outliers and
spreads the target over the blocks (:mod:`nc_prune.core.oneshot.owl`) before the pruning pass.

Bad input is refused before any weight changes (no block list — what was searched and how to name one —
an empty dataloader, a batch the model rejects); a failure midway names the block reached and what was
already pruned.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.errors import ConfigError, PruningStateError
from ..core.oneshot import CalibrationPruner, LayerStats, block_sparsities, outlier_ratio
from ..progress import progress
from . import distributed
from .batches import call_model, describe, split_batch
from .layers import TorchTarget

Inputs = List[Tuple[tuple, dict]]


class _Stop(Exception):
    """Raised by the capture hook once the first block's inputs are in: the rest of the model need not run."""


@dataclass
class CalibrationReport:
    """What a one-shot calibration run did and took.

    Attributes:
        blocks: the path of the block list and how many blocks it has.
        batches: calibration batches; tokens: calibration tokens (rows of the layers' inputs).
        seconds: wall time of the run.
        sparsity: ``{block index: sparsity}`` per pruner group (OWL spreads it; uniform otherwise).
        layers: per pruned layer, the method, the sparsity of each row and what the maths reports (SparseGPT:
            the dampening used and how many retries a non-positive-definite Hessian needed).
        activation_bytes: the largest set of block inputs held at once (all batches, one block).
        stats_bytes: the largest set of statistics held at once (one block's layers).
        ranks: the ranks whose statistics were summed (1 outside ``torch.distributed``); ``batches`` and
            ``tokens`` are this rank's.
    """

    blocks: Tuple[str, int]
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    sparsity: Dict[int, Dict[int, float]] = field(default_factory=dict)
    layers: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    activation_bytes: int = 0
    stats_bytes: int = 0
    ranks: int = 1

    def __str__(self) -> str:
        path, n = self.blocks
        retries = {n: l["retries"] for n, l in self.layers.items() if l.get("retries")}
        lines = [f"one-shot: {len(self.layers)} layers in {n} blocks of {path or 'the model'}, {self.batches} batches "
                 f"({self.tokens:,} tokens), {self.seconds:.1f} s; held at most {self.activation_bytes / 2**20:.1f} MiB "
                 f"of block inputs and {self.stats_bytes / 2**20:.1f} MiB of statistics"]
        if retries:
            lines.append("more dampening was needed for: " + ", ".join(f"{k} ({v} retries)" for k, v in retries.items()))
        return "\n".join(lines)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0


def _to(obj: Any, device: Optional[torch.device]) -> Any:
    """``obj`` with every tensor in it on ``device`` (None: as it is)."""
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def find_blocks(model: nn.Module, layers: Dict[str, TorchTarget], path: Optional[str] = None
                ) -> Tuple[str, List[nn.Module]]:
    """The repeated blocks holding ``layers``: ``(path, blocks)``.

    Without ``path``, the ``nn.ModuleList`` or ``nn.Sequential`` (of two children or more) whose children hold
    the most of the layers; ties go to the outermost.
    """
    if path is not None:
        try:
            found = model.get_submodule(path) if path else model
        except AttributeError:
            raise ConfigError(f"blocks={path!r} names no module of {type(model).__name__}; pass the path of its "
                              f"nn.ModuleList of blocks, e.g. 'model.layers'") from None
        if not isinstance(found, (nn.ModuleList, nn.Sequential)):
            raise ConfigError(f"blocks={path!r} is a {type(found).__name__}, not an nn.ModuleList or nn.Sequential "
                              f"of blocks")
        return path, list(found)
    owners = {id(t.module) for t in layers.values()}
    best: Tuple[int, str, List[nn.Module]] = (0, "", [])
    searched = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) >= 2:
            children = list(module)
            held = sum(1 for c in children for m in c.modules() if id(m) in owners)
            searched.append(f"{name or '<model>'} ({held} of the layers)")
            if held > best[0]:
                best = (held, name, children)
    if best[0] == 0:
        raise ConfigError(
            "found no block list for one-shot pruning: searched every nn.ModuleList / nn.Sequential of two or more "
            f"children for the layers to prune ({', '.join(searched) or 'there are none'}); pass "
            f"blocks='path.to.blocks' to prepare_pruning (e.g. 'model.layers')"
        )
    return best[1], best[2]


@contextlib.contextmanager
def _no_cache(model: nn.Module):
    """transformers models must not build a key/value cache while blocks are re-run on the same inputs."""
    config = getattr(model, "config", None)
    had = getattr(config, "use_cache", None)
    if had:
        config.use_cache = False
    try:
        yield
    finally:
        if had:
            config.use_cache = had


def _next_inputs(out: Any, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """The next block's inputs: this block's output (its first item) in place of the hidden states."""
    hidden = out[0] if isinstance(out, (tuple, list)) else out
    if args:
        return (hidden,) + tuple(args[1:]), kwargs
    return args, dict(kwargs, hidden_states=hidden)


def collect_inputs(stats: LayerStats) -> Callable:
    """A forward hook folding the module's first input, flattened to (tokens, features), into ``stats``."""
    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        x = inputs[0]
        stats.add(x.detach().reshape(-1, x.shape[-1]))
    return hook


class Calibration:
    """One run of the pipeline over a :class:`~nc_prune.torch.pruning.TorchPruning`'s calibration groups."""

    def __init__(self, model: nn.Module, pruners: Sequence[CalibrationPruner], blocks: Optional[str] = None,
                 device: Optional[Any] = None, show_progress: Optional[bool] = None,
                 process_group: Any = None) -> None:
        self.model = model
        self.pruners = list(pruners)
        self.owner = {name: p for p in self.pruners for name in p.modules}
        self.targets: Dict[str, TorchTarget] = {name: t for p in self.pruners for name, t in p.modules.items()}
        for name, t in self.targets.items():
            if t.canonical(t.weight).dim() != 2:
                raise ConfigError(
                    f"layer {name!r} is a {type(t.module).__name__} (weight {tuple(t.weight.shape)}); one-shot "
                    f"{self.owner[name].method} prunes Linear layers and transformers' Conv1D. Leave it out "
                    f"(excluded_op_names) or give it a group of its own with pruning_type='magnitude'"
                )
        self.path, self.blocks = find_blocks(model, self.targets, blocks)
        self.device = None if device is None else torch.device(device)
        self.show_progress = show_progress
        self.report = CalibrationReport((self.path, len(self.blocks)))
        self.process_group = process_group
        self._pending: Optional[BaseException] = None  # a failure of this rank the others have not heard of yet
        group = distributed.active_group(process_group)
        if group is not False:
            import torch.distributed as dist

            self.report.ranks = dist.get_world_size(group)
        in_block = {id(m): i for i, b in enumerate(self.blocks) for m in b.modules()}
        self.block_of = {name: in_block.get(id(t.module)) for name, t in self.targets.items()}

    # ---- the run ----------------------------------------------------------------------------------
    def check(self, dataloader: Iterable) -> None:
        """Run the model up to the first block on every batch — refuses bad batches before any weight changes.

        Under ``torch.distributed`` a batch refused on one rank stops every rank here."""
        error = None
        try:
            with torch.no_grad(), _no_cache(self.model):
                self._capture(dataloader, [])
        except ConfigError as exc:
            error = exc
        distributed.agree(error, self.process_group, "checking the calibration batches")

    def run(self, dataloader: Iterable) -> CalibrationReport:
        start = time.perf_counter()
        with torch.no_grad(), _no_cache(self.model):
            outside = [n for n, b in self.block_of.items() if b is None]
            inputs, before = self._capture(dataloader, outside)
            if before:  # layers in front of the blocks change what the blocks see: prune them, capture again
                self._prune(before, self._stats_of(before, inputs=None, dataloader=dataloader), uniform=True)
                inputs, _ = self._capture(dataloader, [])
            allocation = self._allocation(inputs)
            self._blocks(inputs, allocation)
            after = [n for n in outside if n not in before]
            if after:
                self._prune(after, self._stats_of(after, inputs=None, dataloader=dataloader), uniform=True)
            if self._pending is not None:  # a failure no reduction came after to share
                raise self._pending
        self.report.seconds = time.perf_counter() - start
        return self.report

    def _batches(self, dataloader: Iterable) -> Iterable:
        seen = 0
        for batch in dataloader:
            seen += 1
            yield _to(split_batch(batch)[0], self.device)
        if seen == 0:
            raise ConfigError("the dataloader gave no batch; one-shot pruning needs calibration batches")

    def _capture(self, dataloader: Iterable, hooked: List[str]) -> Tuple[Inputs, List[str]]:
        """Each batch's inputs to the first block, and which of ``hooked`` ran before it."""
        inputs: Inputs = []
        fired: List[str] = []
        handles = [self.targets[n].module.register_forward_hook(lambda *a, n=n: fired.append(n)) for n in hooked]

        def grab(module, args, kwargs):
            inputs.append((tuple(args), {k: v for k, v in kwargs.items() if k not in ("past_key_values",
                                                                                       "past_key_value")}))
            raise _Stop

        handles.append(self.blocks[0].register_forward_pre_hook(grab, with_kwargs=True))
        tokens = 0
        try:
            for batch in self._batches(dataloader):
                try:
                    call_model(self.model, batch)
                except _Stop:
                    pass
                except (TypeError, ValueError, RuntimeError, IndexError) as exc:
                    raise ConfigError(f"the model rejected a calibration batch of structure {describe(batch)}: "
                                      f"{type(exc).__name__}: {exc}") from exc
                else:
                    raise ConfigError(f"the first block ({self.path}.0) never ran on a calibration batch; are the "
                                      f"blocks used in the model's forward?")
                hidden = inputs[-1][0][0] if inputs[-1][0] else inputs[-1][1].get("hidden_states")
                tokens += int(hidden.numel() // hidden.shape[-1]) if isinstance(hidden, torch.Tensor) else 0
        finally:
            for h in handles:
                h.remove()
        self.report.batches, self.report.tokens = len(inputs), tokens
        self.report.activation_bytes = max(self.report.activation_bytes, _nbytes(inputs))
        return inputs, list(dict.fromkeys(fired))

    def _stats_of(self, names: List[str], inputs: Optional[Inputs], dataloader: Iterable,
                  block: Optional[nn.Module] = None) -> Dict[str, LayerStats]:
        """Statistics of ``names`` from a pass of ``block`` over ``inputs``, or of the whole model over the data;
        under ``torch.distributed``, summed over the ranks (a failure on one rank stops them all here)."""
        stats = {n: self.owner[n].new_stats(n) for n in names}
        handles = [self.targets[n].module.register_forward_hook(collect_inputs(stats[n])) for n in names]
        error, self._pending = self._pending, None
        try:
            if error is not None:
                pass  # this rank failed to make these inputs: tell the others at the reduction
            elif block is not None:
                for args, kwargs in inputs:
                    block(*args, **kwargs)
            else:
                for batch in self._batches(dataloader):
                    call_model(self.model, batch)
        except Exception as exc:  # noqa: BLE001 - raised again below, on every rank
            error = exc
        finally:
            for h in handles:
                h.remove()
        features = {n: (self.targets[n].canonical(self.targets[n].weight).shape[1],
                        self.device or self.targets[n].weight.device) for n in names}
        distributed.sum_stats_(stats.values(), self.process_group, features, error)  # every rank's tokens
        self.report.stats_bytes = max(self.report.stats_bytes, sum(_nbytes(s.arrays()) for s in stats.values()))
        return stats

    def _prune(self, names: List[str], stats: Dict[str, LayerStats], uniform: bool = False,
               block: Optional[int] = None, allocation: Optional[Dict[int, List[float]]] = None) -> None:
        for name in names:
            pruner = self.owner[name]
            target = pruner.target_sparsity_ratio
            if not uniform and allocation is not None and id(pruner) in allocation:
                target = allocation[id(pruner)][block]
            info = pruner.prune_layer(name, stats[name], target)
            self.report.layers[name] = dict(info, method=pruner.method, sparsity=target, block=block)

    def _in_block(self, i: int) -> List[str]:
        return [n for n, b in self.block_of.items() if b == i]

    def _propagate(self, block: nn.Module, inputs: Inputs) -> Inputs:
        try:
            return [_next_inputs(block(*args, **kwargs), args, kwargs) for args, kwargs in inputs]
        except Exception as exc:
            if distributed.active_group(self.process_group) is False:
                raise
            self._pending = exc  # raised at the next reduction, together with the other ranks
            return inputs

    def _allocation(self, inputs: Inputs) -> Dict[int, List[float]]:
        """Per OWL pruner, one sparsity per block from the dense blocks' outliers (a first pass)."""
        owl = [p for p in self.pruners if p.config["parameters"]["sparsity_allocation"] == "owl"]
        if not owl:
            return {}
        ratios: Dict[int, List[float]] = {id(p): [0.0] * len(self.blocks) for p in owl}
        for i, block in enumerate(progress(self.blocks, desc="OWL: outliers per block", enabled=self.show_progress)):
            names = [n for n in self._in_block(i) if self.owner[n] in owl]
            if names:
                stats = self._stats_of(names, inputs, None, block)
                for p in owl:
                    mine = [n for n in names if self.owner[n] is p]
                    if mine:
                        scores = [p.outlier_scores(n, stats[n]) for n in mine]
                        ratios[id(p)][i] = outlier_ratio(scores, p.config["parameters"]["owl_m"])
            inputs = self._propagate(block, inputs)
        out = {}
        for p in owl:
            used = [i for i in range(len(self.blocks)) if any(self.owner[n] is p for n in self._in_block(i))]
            out[id(p)] = block_sparsities(ratios[id(p)], used, len(self.blocks), p.target_sparsity_ratio,
                                          p.config["parameters"]["owl_lambda"])
            self.report.sparsity[self.pruners.index(p)] = {i: out[id(p)][i] for i in used}
        return out

    def _blocks(self, inputs: Inputs, allocation: Dict[int, List[float]]) -> None:
        done: List[int] = []
        for i, block in enumerate(progress(self.blocks, desc="one-shot: blocks", enabled=self.show_progress)):
            names = self._in_block(i)
            home = next((p.device for p in block.parameters()), None)
            try:
                if self.device is not None:
                    block.to(self.device)  # INC's device: compute there, keep the model where it was
                if names:
                    self._prune(names, self._stats_of(names, inputs, None, block), block=i, allocation=allocation)
                    done.append(i)
                if i + 1 < len(self.blocks):
                    inputs = self._propagate(block, inputs)
            except (ConfigError, PruningStateError, RuntimeError, ValueError, TypeError) as exc:
                raise PruningStateError(
                    f"one-shot pruning failed in block {i} ({self.path}.{i}): {type(exc).__name__}: {exc}. Pruned so "
                    f"far: blocks {done or 'none'} ({sum(1 for n in self.report.layers)} layers); the other blocks "
                    f"are unchanged"
                ) from exc
            if self.device is not None and home is not None:
                block.to(home)
            self.report.activation_bytes = max(self.report.activation_bytes, _nbytes(inputs))
