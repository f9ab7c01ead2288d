"""Training-time pruning of torch models: ``prepare_pruning`` and the object it returns.

>>> import torch
>>> from nc_prune import WeightPruningConfig
>>> from nc_prune.torch import prepare_pruning
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5)
>>> pruning = prepare_pruning(model, cfg, opt)
>>> model(torch.randn(4, 8)).sum().backward(); opt.step()
>>> round(pruning.report()["0"].ratio, 2)
0.5
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import torch
from torch import nn

from ..core import records
from ..core.errors import ConfigError, PruningStateError
from ..core.layers import LayerPlan
from ..core.report import SparsityReport
from ..core.session import PruningSession, as_config
from ..progress import progress
from .batches import batch_loss
from ..core.oneshot.stats import LayerStats
from .calibration import Calibration, CalibrationReport, collect_inputs
from . import distributed
from .layers import TorchTarget, find_targets, unwrap
from .pruner import PytorchBasePruner, zero_masked
from .sharded import is_sharded, local, sharded_report
from .structure import find_couplings
from .state import (MASK_SUFFIX, PLAN_BUFFER, REPLAN, STEP_BUFFER, CheckRecords, ModelStep, ReapplyMask,
                    is_state_buffer, plan_tensor, read_plan, report_from_state)

# model → its live TorchPruning. The value is a weak reference: a strong one would keep every prepared model
# alive for good (the pruning object holds its model), and the optimizer's step hooks keep a pruning that is
# still driving training alive anyway.
_LIVE: "weakref.WeakKeyDictionary[nn.Module, weakref.ReferenceType]" = weakref.WeakKeyDictionary()


def inner_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper — Accelerate's ``AcceleratedOptimizer`` (``.optimizer``),
    Lightning's ``LightningOptimizer`` (``._optimizer``) — else ``optimizer``. The wrappers subclass
    ``torch.optim.Optimizer`` without its step hooks; the inner optimizer's ``step()`` is the one that runs them."""
    for _ in range(8):  # wrappers of wrappers, but never a cycle
        inner = next((getattr(optimizer, a) for a in ("optimizer", "_optimizer")
                      if isinstance(getattr(optimizer, a, None), torch.optim.Optimizer)), None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer


def live_pruning(model: nn.Module) -> Optional["TorchPruning"]:
    """The :class:`TorchPruning` currently attached to ``model`` (or to the model it wraps), else None."""
    ref = _LIVE.get(unwrap(model))
    return None if ref is None else ref()


class _Snapshot:
    """What preparing may change on a model — buffers and load hooks of every module — to put back on failure."""

    def __init__(self, model: nn.Module) -> None:
        self._saved = [(m, dict(m._buffers), set(m._non_persistent_buffers_set), set(m._load_state_dict_pre_hooks),
                        set(m._load_state_dict_post_hooks)) for m in model.modules()]

    def restore(self) -> None:
        for m, buffers, non_persistent, pre, post in self._saved:
            m._buffers.clear()
            m._buffers.update(buffers)
            m._non_persistent_buffers_set.clear()
            m._non_persistent_buffers_set.update(non_persistent)
            for hooks, keep in ((m._load_state_dict_pre_hooks, pre), (m._load_state_dict_post_hooks, post)):
                for key in [k for k in hooks if k not in keep]:
                    del hooks[key]


class _Structure:
    """Where each pruned weight sat when pruning was prepared; checked every step (a few dict lookups).

    A layer replaced afterwards (``model.fc1 = nn.Linear(...)``) would otherwise be trained dense in
    silence while its masks keep zeroing the old module's weight.
    """

    def __init__(self, root: nn.Module, targets: Dict[str, TorchTarget]) -> None:
        edges: Dict[tuple, tuple] = {}
        for name, t in targets.items():
            parent = root
            path = name if t.path is None else t.path
            for part in path.split(".") if path else []:
                child = parent._modules[part]
                edges.setdefault((id(parent), part), (parent._modules, part, child, name))
                parent = child
            edges.setdefault((id(t.module), t.param), (t.module._parameters, t.param, t.weight, name))
        self._edges = list(edges.values())

    def check(self) -> None:
        for holder, key, obj, name in self._edges:
            if holder.get(key) is not obj:
                what = "its weight Parameter" if isinstance(obj, nn.Parameter) else f"module {key!r} on its path"
                raise PruningStateError(
                    f"layer {name!r} changed after prepare_pruning ({what} was replaced), so its pruning state no "
                    f"longer reaches the model and it would train dense. Call prepare_pruning(model, config, "
                    f"optimizer) again after changing the model (with an optimizer built from its new parameters)"
                )


def _where(target: TorchTarget) -> Dict[str, str]:
    """What a record needs to find the weight in a state dict: its key and its layout."""
    return {"key": target.key, "layout": "transposed" if target.transposed else "canonical"}


def _glue_extra(session: PruningSession, targets: Dict[str, TorchTarget]) -> Dict[str, Dict[str, Any]]:
    return {name: dict(_where(targets[name]), **{REPLAN: p.config[REPLAN]})
            for p in session.pruners for name in p.modules}


class TorchPruning:
    """The pruning state of one model: pruners per config group, hooks, report.

    With an optimizer, pruning follows ``optimizer.step()`` through the optimizer's own step hooks. Without
    one, call INC's callbacks yourself: ``on_train_begin``, then per step ``on_step_begin``,
    ``on_before_optimizer_step``, ``on_after_optimizer_step``, ``on_step_end``; ``on_train_end`` at the end.

    Preparing is all or nothing: when it fails (a config that selects nothing, an optimizer that does not
    own the weights, a checkpoint plan that does not fit), the model — and an earlier pruning of it — is
    left exactly as it was.

    Attributes:
        model: the model as passed (a ``torch.compile`` / DDP wrapper included; names are the inner model's).
        layer_plan: which group prunes each layer, and why the others stay dense.
        calibration: what the last one-shot calibration run (``sparse_gpt`` / ``wanda``) did and took, or None.
    """

    calibration: Optional[CalibrationReport] = None
    _skipped = False  # this optimizer step is DCP's state-initialising one (see _is_state_init_step)

    def __init__(self, model: nn.Module, config, optimizer: Optional[torch.optim.Optimizer] = None, *,
                 process_group: Any = None, check_masks_across_ranks: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(check_masks_across_ranks, bool):
            raise TypeError(f"check_masks_across_ranks must be True or False, got {check_masks_across_ranks!r}")
        self.model = model
        root = self._root = unwrap(model)
        self.config = distributed.strip_wrapper_prefixes(config, root)  # "module.fc1" and "fc1" select the same
        self.process_group = process_group
        self.check_masks_across_ranks = check_masks_across_ranks
        infos, targets = find_targets(root)
        previous = live_pruning(root)
        snapshot = _Snapshot(root)
        self._module_handles: List[Any] = []
        self._optimizer_handles: List[Any] = []
        self.optimizer = optimizer = inner_optimizer(optimizer)
        try:
            found: Dict[str, List[Any]] = {}

            def couplings(group) -> List[Any]:  # heads and FFN channels, found once per GQA mode asked for
                mode = group["parameters"].get("gqa_heads", "kv")
                if any(is_sharded(t.weight) for t in targets.values()):
                    return []  # FSDP2: no couplings yet, and tracing would run the shards' forward hooks
                if mode not in found:
                    found[mode] = find_couplings(root, targets, mode)
                return found[mode]

            # the step lives in the model's nc_prune_step buffer; the session and its pruners read it there
            self._step = ModelStep(root)
            self.session = PruningSession(self.config, infos, lambda plan: {l.name: targets[l.name] for l in plan},
                                          PytorchBasePruner, couplings, step_counter=self._step)
            self.pruners: List[PytorchBasePruner] = self.session.pruners  # type: ignore[assignment]
            self._targets = {name: targets[name] for p in self.pruners for name in p.modules}
            self._all_targets = targets
            if optimizer is not None:
                self.session.check_training_time("prepare_pruning(..., optimizer=...)")
                self._check_optimizer(optimizer)
            self._install_root_state()
            for target in self._targets.values():
                self._module_handles.append(
                    target.module.register_load_state_dict_post_hook(ReapplyMask(target.param, target.mask_name)))
            checker = CheckRecords()
            self._module_handles += [root.register_load_state_dict_pre_hook(checker.before),
                                     root.register_load_state_dict_post_hook(checker.after)]
            self._structure = _Structure(root, self._targets)
            if optimizer is not None:
                self._optimizer_handles = [optimizer.register_step_pre_hook(self._pre_step),
                                           optimizer.register_step_post_hook(self._post_step)]
        except BaseException:
            for h in self._module_handles + self._optimizer_handles:
                h.remove()
            snapshot.restore()
            raise
        if previous is not None:
            warnings.warn("this model was already prepared for pruning; the earlier pruning's hooks are removed "
                          "and its masks adopted by the new one", stacklevel=3)
            previous._retire(keep=set(self._targets))
        _LIVE[root] = weakref.ref(self)
        if optimizer is not None:
            self.session.on_train_begin()

    @property
    def layer_plan(self) -> LayerPlan:
        return self.session.layer_plan

    # ---- checks before anything is attached -------------------------------------------------------
    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [name for name, t in self._targets.items() if id(t.weight) not in owned]
        frozen = [name for name in missing if not self._targets[name].weight.requires_grad]
        if missing:
            raise ConfigError(
                f"the optimizer does not update the weights of {', '.join(missing)}; pass an optimizer built "
                f"from model.parameters() (after any model surgery), or call prepare_pruning without it and drive "
                f"the callbacks yourself"
                + (f". Of these, {', '.join(frozen)} have requires_grad=False: leave them out of op_names (frozen "
                   f"layers are skipped unless named exactly), or unfreeze them and add them to the optimizer"
                   if frozen else "")
            )

    # ---- the model's own buffers: step counter and plan ----------------------------------------------
    def _install_root_state(self) -> None:
        root = self._root
        live = records.session_records(self.session, _glue_extra(self.session, self._targets))
        existing = read_plan(root._buffers.get(PLAN_BUFFER))
        if existing is not None:
            differ = records.conflicts(existing[0], live)
            if differ and not all(r[REPLAN] for r in live.values()):
                raise records.mismatch_error(list(differ.values()), "this model (prepared before, not stripped)")
            for name in (n for n in differ if n in live):  # re-plan from the zeros the weights have
                t = self._targets[name]
                t.module._buffers[t.mask_name].copy_(t.weight.detach() != 0)
        dense = {name: dict(_where(self._all_targets[name]), note=reason)
                 for name, reason in self.layer_plan.dense().items()}
        root.register_buffer(PLAN_BUFFER, plan_tensor(live, dense), persistent=True)
        if root._buffers.get(STEP_BUFFER) is None:
            device = next(iter(self._targets.values())).weight.device
            root.register_buffer(STEP_BUFFER, torch.zeros((), dtype=torch.int64, device=device), persistent=True)
        self._seen_writes = -1
        self._sync_step()

    def _sync_step(self) -> None:
        """Re-read the score buffers when something else (``load_state_dict``, ``dcp.load``) wrote the step
        buffer: a checkpoint was loaded, and its scores come with its step. The step itself needs no copying:
        every object reads it from the buffer (:class:`~nc_prune.torch.state.ModelStep`)."""
        self._step.get()
        if self._step.outside_writes != self._seen_writes:
            for p in self.pruners:
                for name in p.modules:
                    if p.needs_grad:
                        score = local(p._buffer(name, "score"))
                        p.scores[name] = score if bool(score.any()) else None
            self._seen_writes = self._step.outside_writes

    @property
    def global_step(self) -> int:
        """Optimizer steps pruning has seen: the model's ``nc_prune_step`` buffer."""
        self._sync_step()
        return self.session.global_step

    # ---- optimizer hooks ---------------------------------------------------------------------
    def _is_state_init_step(self, optimizer) -> bool:
        """The step ``torch.distributed.checkpoint``'s ``get_state_dict(model, optimizer)`` takes on an optimizer
        that has no state yet (``_init_optim_state``: every lr set to 0, every gradient set to zeros), so that its
        state dict has entries to load into. No weight moves, so it is no training step: pruning neither counts
        it nor prunes in it (else a resumed run would count one step more before loading, and a checkpoint taken
        before the first step would spend pruning step 0 on zero gradients). Cheap: gradients are only looked
        at when the optimizer is stateless and every lr is 0; under FSDP2 the ranks agree by one all_reduce."""
        if optimizer.state or not all(float(g.get("lr", 1.0)) == 0.0 for g in optimizer.param_groups):
            return False
        zero = all(w.grad is not None and not bool(local(w.grad).any())
                   for g in optimizer.param_groups for w in g["params"] if w.requires_grad)
        if any(is_sharded(t.weight) for t in self._targets.values()) and \
                distributed.active_group(self.process_group) is not False:
            import torch.distributed as dist

            flag = torch.tensor([int(zero)], dtype=torch.int64)
            distributed.note("all_reduce", flag)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.process_group)
            zero = bool(flag)
        return zero

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self._skipped = self._is_state_init_step(optimizer)
        if self._skipped:
            return
        self._structure.check()
        self._sync_step()
        self.session.on_step_begin()
        self._before_update()

    def _before_update(self) -> None:
        pruning = any(p.is_pruning_step() for p in self.pruners)
        self.session.on_before_optimizer_step()
        if pruning:
            self._check_ranks(f" at step {self.session.global_step}")

    def _check_ranks(self, when: str) -> None:
        """Under torch.distributed, raise on every rank when the ranks' masks differ (see
        :func:`nc_prune.torch.distributed.check_masks`); one small all_reduce per mask update."""
        if self.check_masks_across_ranks:  # FSDP2 masks are shards: each rank holds other rows
            distributed.check_masks({n: m for n, m in self.masks.items() if not is_sharded(m)}, self.process_group,
                                    when)

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._skipped:
            self._skipped = False
            return
        self.session.on_after_optimizer_step()
        self.session.on_step_end()

    # ---- INC callbacks (manual mode) -------------------------------------------------------------
    def _manual(self, what: str) -> None:
        if self._optimizer_handles:
            raise PruningStateError(
                f"{what}() is driven by the optimizer's step hooks because prepare_pruning got an optimizer; "
                f"remove the call, or prepare without an optimizer to drive the callbacks yourself"
            )

    def on_train_begin(self, dataloader: Any = None) -> None:
        """Start pruning in manual mode; one-shot groups (``sparse_gpt``, ``wanda``, ``retrain_free``) prune
        from ``dataloader`` here and now, as INC's ``on_train_begin(dataloader)`` does."""
        if self._optimizer_handles:
            return
        if any(p.one_shot_only for p in self.pruners):
            if dataloader is None:
                self.session.check_training_time("on_train_begin() without a dataloader")
            self.prune_now(dataloader)
            return
        self.session.on_train_begin(dataloader)

    def on_epoch_begin(self, epoch: int) -> None:
        self.session.on_epoch_begin(epoch)

    def on_step_begin(self, local_step: Optional[int] = None) -> None:
        self._manual("on_step_begin")
        self._structure.check()
        self._sync_step()
        self.session.on_step_begin(local_step)

    def on_before_optimizer_step(self) -> None:
        self._manual("on_before_optimizer_step")
        self._before_update()

    def on_after_optimizer_step(self) -> None:
        self._manual("on_after_optimizer_step")
        self.session.on_after_optimizer_step()

    def on_step_end(self) -> None:
        self._manual("on_step_end")
        self.session.on_step_end()

    def on_epoch_end(self) -> None:
        self.session.on_epoch_end()

    def on_train_end(self) -> None:
        self.session.on_train_end()

    @property
    def callbacks_list(self) -> List["TorchPruning"]:
        """INC's ``compression_manager.callbacks.callbacks_list``: this object alone (nc_prune only prunes)."""
        return [self]

    # INC's CompressionManager callbacks that pruning has nothing to do in; there so INC scripts run unchanged.
    def on_before_eval(self) -> None:
        """Nothing to do: masked weights are already zero between steps."""

    def on_after_eval(self) -> None:
        """Nothing to do: evaluation changes no weight."""

    def on_after_compute_loss(self, input: Any = None, student_output: Any = None, student_loss: Any = None,
                              teacher_output: Any = None, teacher_loss: Any = None) -> Any:
        """Returns ``student_loss`` unchanged (INC's distillation hook; pruning adds no loss term)."""
        return student_loss

    # ---- one-shot ------------------------------------------------------------------------------
    def prune_now(self, dataloader: Optional[Iterable] = None, loss_func: Optional[Callable] = None,
                  max_batches: Optional[int] = None, device: Optional[Any] = None,
                  blocks: Optional[str] = None) -> None:
        """Prune every group to its final target at once.

        Gradient criteria (``snip``, ``snip_momentum``, ``gradient``) need ``dataloader``: its batches are run
        forward and backward (no weight update) to build the scores. A batch is a dict (``model(**batch)``),
        ``(inputs, target)`` or a tensor (see :mod:`nc_prune.torch.batches`); ``loss_func(output, target)``
        computes the loss, else the model's output must have a ``loss`` (transformers models given labels).

        ``sparse_gpt`` and ``wanda`` groups are pruned from the dataloader's batches block by block (see
        :mod:`nc_prune.torch.calibration`): ``blocks`` names the model's block list when it cannot be found,
        ``device`` is where each block is computed (INC's argument; the model stays where it is). What the
        run did is in :attr:`calibration`.
        """
        self._structure.check()
        calibrated = [p for p in self.pruners if getattr(p, "calibrated", False)]
        regular = [p for p in self.pruners if not getattr(p, "calibrated", False)]
        calibration = None
        if calibrated:
            if dataloader is None:
                kinds = sorted({p.config["pruning_type"] for p in calibrated})
                raise ConfigError(f"pruning_type {', '.join(kinds)} learns from calibration data; pass "
                                  f"dataloader= with a few batches of the model's inputs")
            dataloader = list(dataloader)  # read several times (capture, blocks, outside layers): a generator too
            calibration = Calibration(self._root, calibrated, blocks, device, process_group=self.process_group)
            calibration.check(dataloader)  # bad batches are refused before any weight changes
        self.session.on_train_begin(dataloader)
        if any(p.needs_grad for p in regular):
            if dataloader is None:
                kinds = sorted({p.config["pruning_type"] for p in regular if p.needs_grad})
                raise ConfigError(
                    f"pruning_type {', '.join(kinds)} scores weights by their gradients; pass a dataloader "
                    f"(and loss_func) for one-shot pruning, or use pruning_type='magnitude'"
                )
            self._accumulate_scores(dataloader, loss_func, max_batches)
        for p in regular:
            if p.is_pruning_step(p.scheduler.last_pruning_step()):
                p.update_masks(p.scheduler.last_pruning_step())
        if calibration is not None:
            self.calibration = calibration.run(dataloader)
        self._check_ranks(" after one-shot pruning")
        self.session.global_step = max(p.scheduler.last_pruning_step() + 1 for p in self.pruners)

    def _accumulate_scores(self, dataloader, loss_func, max_batches) -> None:
        was_training = self.model.training
        self.model.train()
        params = [t.weight for t in self._targets.values()]
        saved = [w.grad for w in params]
        seen = 0
        reduce_grads = distributed.active_group(self.process_group) is not False and \
            not distributed.is_data_parallel(self.model)
        wanted = {n: p for p in self.pruners if p.needs_grad for n in getattr(p, "input_stats_layers", list)()}
        stats = {n: LayerStats(n, hessian=True, norms=False) for n in wanted}  # for retrain_free's weight fix
        handles = [self._targets[n].module.register_forward_hook(collect_inputs(s)) for n, s in stats.items()]
        try:
            total = max_batches if max_batches is not None else _length(dataloader)
            for i, batch in enumerate(progress(dataloader, total=total, desc="one-shot scores")):
                if max_batches is not None and i >= max_batches:
                    break
                for w in params:
                    w.grad = None
                batch_loss(self.model, batch, loss_func).backward()
                if reduce_grads:  # each rank ran its own batch: average as DDP's backward would have
                    distributed.average_([w.grad for w in params], self.process_group)
                for p in self.pruners:
                    if p.needs_grad:
                        p.update_scores()
                seen += 1
        finally:
            for h in handles:
                h.remove()
            for w, g in zip(params, saved):
                w.grad = g
            self.model.train(was_training)
        if seen == 0:
            raise ConfigError("the dataloader gave no batch; one-shot scores by gradients need at least one")
        distributed.sum_stats_(stats.values(), self.process_group)  # activations: every rank's tokens
        for n, s in stats.items():
            wanted[n].input_stats[n] = s

    # ---- reporting and clean-up ---------------------------------------------------------------
    def report(self) -> SparsityReport:
        """Per-layer and total sparsity of the prunable weights, with each layer's pattern (or why it is dense)."""
        return sparsity_report(self._root)

    @property
    def masks(self) -> Dict[str, torch.Tensor]:
        return {name: m for p in self.pruners for name, m in p.masks.items()}

    def remove(self) -> None:
        """Detach the hooks; masks and weights stay as they are."""
        for h in self._optimizer_handles + self._module_handles:
            h.remove()
        self._optimizer_handles, self._module_handles = [], []
        if live_pruning(self._root) is self:
            del _LIVE[self._root]

    def _retire(self, keep: Set[str]) -> None:
        """Hand the model to a newer pruning: detach, and finish the layers it no longer prunes (as strip does)."""
        self.remove()
        for name, t in self._targets.items():
            if name not in keep:
                _finish(t.module)

    def strip(self) -> nn.Module:
        """See :func:`strip`."""
        return strip(self.model)


def _length(iterable: Any) -> Optional[int]:
    try:
        return len(iterable)
    except TypeError:
        return None


def prepare_pruning(model: nn.Module, config, optimizer: Optional[torch.optim.Optimizer] = None,
                    dataloader: Optional[Iterable] = None, loss_func: Optional[Callable] = None,
                    device: Optional[Any] = None, blocks: Optional[str] = None, *, process_group: Any = None,
                    check_masks_across_ranks: bool = True) -> TorchPruning:
    """Prepare ``model`` for pruning as ``config`` describes (INC's ``prepare_pruning``).

    Args:
        model: the torch model (a ``torch.compile`` or ``DistributedDataParallel`` wrapper is fine: layer
            names are the inner model's); its Linear, Conv1d/2d/3d and transformers ``Conv1D`` weights are
            candidates. Frozen weights and weights shared with another module are left out unless named exactly.
        config: a :class:`~nc_prune.WeightPruningConfig` (or a dict of its keys).
        optimizer: training-time pruning follows this optimizer's steps through its step hooks. A framework's
            wrapper (Accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``) is looked through:
            the hooks go on the torch optimizer inside it.
        dataloader: one-shot pruning now, with scores from these batches for gradient criteria, or with these
            calibration batches for ``sparse_gpt`` and ``wanda``.
        loss_func: ``loss_func(output, target)`` for one-shot gradient scores.
        device: where ``sparse_gpt`` / ``wanda`` compute each block (INC's argument); default the weights'.
        blocks: the path of the model's block list (``"model.layers"``) when it cannot be found.
        process_group: under ``torch.distributed``, the ranks that train this model together (default: the
            world). See :mod:`nc_prune.torch.distributed`.
        check_masks_across_ranks: under ``torch.distributed``, compare the ranks' masks after every mask update
            (one all_reduce of 4 integers per layer) and raise, naming the layers, when they differ. On by
            default; ``False`` skips the collective.

    Returns:
        A :class:`TorchPruning`; with neither optimizer nor dataloader, drive its callbacks yourself.
    """
    if optimizer is not None and dataloader is not None:
        raise ConfigError(
            "pass an optimizer (pruning during training) or a dataloader (one-shot pruning now), not both"
        )
    pruning = TorchPruning(model, config, optimizer, process_group=process_group,
                           check_masks_across_ranks=check_masks_across_ranks)
    if dataloader is not None:
        pruning.prune_now(dataloader, loss_func, device=device, blocks=blocks)
    return pruning


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Sparsity of every prunable weight of ``model`` (Linear, Conv, ``Conv1D``), per layer and total.

    A model being pruned (or loaded from a checkpoint saved during pruning) carries its plan: then each
    pruned layer shows its pattern and pruned units, and each dense one why it is dense — the same table
    ``nc-prune report`` prints from the saved ``state_dict``.

    On an FSDP2 model (``fully_shard``, DTensor weights) it is a collective: every rank counts the zeros and
    pruned units of its own shards and one ``all_reduce`` sums them, so every rank returns the whole model's
    report (call it on all ranks). No weight is gathered.
    """
    root = unwrap(model)
    state = root.state_dict(keep_vars=True)
    if any(is_sharded(v) for v in state.values()):  # FSDP2: counted on each rank's shards, summed over the ranks
        plan = read_plan(state.get(PLAN_BUFFER))
        if plan is None:
            _, targets = find_targets(root)
            plan = {}, {name: dict(_where(t), note="") for name, t in targets.items()}
        layers, dense = plan
        position = {k: i for i, k in enumerate(state)}
        order = sorted({**dense, **layers}, key=lambda n: position[{**dense, **layers}[n]["key"]])
        live = live_pruning(root)
        return sharded_report(state, layers, dense, order, None if live is None else live.process_group)
    report = report_from_state(state)
    if report is not None:
        return report
    _, targets = find_targets(root)
    return SparsityReport.from_arrays({name: t.canonical(t.weight.detach()).cpu().float().numpy()
                                       for name, t in targets.items()})


def _finish(module: nn.Module) -> None:
    """Zero a module's masked weights for good and remove nc_prune's buffers and load hooks from it."""
    with torch.no_grad():
        for buf_name in [b for b in module._buffers if b.endswith(MASK_SUFFIX)]:
            param = getattr(module, buf_name[: -len(MASK_SUFFIX)])
            zero_masked([local(param.data)], [local(module._buffers[buf_name])])
        for buf_name in [b for b in module._buffers if is_state_buffer(b)]:
            del module._buffers[buf_name]
        hooks = module._load_state_dict_post_hooks
        for key in [k for k, h in hooks.items() if isinstance(h, ReapplyMask) or _is_ours(h)]:
            del hooks[key]
        hooks = module._load_state_dict_pre_hooks
        for key in [k for k, h in hooks.items() if _is_ours(h)]:
            del hooks[key]


def _is_ours(hook: Any) -> bool:
    inner = getattr(hook, "hook", hook)  # torch wraps pre-hooks in a _WrappedHook
    return isinstance(getattr(inner, "__self__", None), CheckRecords)


def strip(model: nn.Module) -> nn.Module:
    """Make ``model`` a plain model again, in place, and return it.

    Masks are applied a last time, then every nc_prune hook and buffer is removed: the weights keep their
    zeros and ``model.state_dict()`` loads into an unpruned copy of the architecture.
    """
    live = live_pruning(model)
    if live is not None:
        live.remove()
    root = unwrap(model)
    for module in root.modules():
        _finish(module)
    root._buffers.pop(STEP_BUFFER, None)
    root._buffers.pop(PLAN_BUFFER, None)
    return model
