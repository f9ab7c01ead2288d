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
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

from ..core.errors import ConfigError, PruningStateError
from ..core.report import SparsityReport
from ..core.session import PruningSession, as_config
from ..progress import progress
from .layers import STEP_BUFFER, TorchTarget, find_targets
from .pruner import PytorchBasePruner

# model → its live TorchPruning, so strip(model) can also remove the optimizer hooks
_LIVE: "weakref.WeakKeyDictionary[nn.Module, TorchPruning]" = weakref.WeakKeyDictionary()


class ReapplyMask:
    """Module hook: after ``load_state_dict``, masked weights are zeroed again.

    A plain picklable object (no reference to the pruning object), so pruned models deep-copy and pickle.
    """

    def __init__(self, param: str, mask: str) -> None:
        self.param, self.mask = param, mask

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        mask = module._buffers.get(self.mask)
        if mask is not None:
            with torch.no_grad():
                getattr(module, self.param).mul_(mask)


class TorchPruning:
    """The pruning state of one model: pruners per config group, hooks, report.

    With an optimizer, pruning follows ``optimizer.step()`` through the optimizer's own step hooks. Without
    one, call INC's callbacks yourself: ``on_train_begin``, then per step ``on_step_begin``,
    ``on_before_optimizer_step``, ``on_after_optimizer_step``, ``on_step_end``; ``on_train_end`` at the end.
    """

    def __init__(self, model: nn.Module, config, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.config = as_config(config)
        previous = _LIVE.get(model)
        if previous is not None:
            warnings.warn("this model was already prepared for pruning; the earlier pruning's hooks are removed "
                          "and its masks adopted by the new one", stacklevel=3)
            previous.remove()
        infos, targets = find_targets(model)
        self._targets = targets
        self.session = PruningSession(self.config, infos, lambda plan: {l.name: targets[l.name] for l in plan},
                                      PytorchBasePruner)
        self.pruners: List[PytorchBasePruner] = self.session.pruners  # type: ignore[assignment]
        self._module_handles: List[Any] = []
        self._optimizer_handles: List[Any] = []
        self.optimizer = optimizer
        self._install_step_buffer()
        for p in self.pruners:
            for target in p.modules.values():
                self._module_handles.append(
                    target.module.register_load_state_dict_post_hook(ReapplyMask(target.param, target.mask_name)))
        if optimizer is not None:
            self._attach(optimizer)
        _LIVE[model] = self

    # ---- step counter kept in the model's state_dict ------------------------------------------
    def _install_step_buffer(self) -> None:
        buf = self.model._buffers.get(STEP_BUFFER)
        if buf is None:
            device = next(iter(self._targets.values())).weight.device
            buf = torch.zeros((), dtype=torch.int64, device=device)
            self.model.register_buffer(STEP_BUFFER, buf, persistent=True)
        self._seen_version = -1
        self._sync_step()

    def _sync_step(self) -> None:
        """Adopt the step from the buffer when something (``load_state_dict``) wrote to it."""
        buf = self.model._buffers[STEP_BUFFER]
        if buf._version != self._seen_version:
            self.session.global_step = int(buf)
            for p in self.pruners:
                for name in p.modules:
                    if p.needs_grad:
                        score = p._buffer(name, "score")
                        p.scores[name] = score if bool(score.any()) else None
            self._seen_version = buf._version

    def _advance_step(self) -> None:
        buf = self.model._buffers[STEP_BUFFER]
        buf.fill_(self.session.global_step)
        self._seen_version = buf._version

    @property
    def global_step(self) -> int:
        self._sync_step()
        return self.session.global_step

    # ---- optimizer hooks ---------------------------------------------------------------------
    def _attach(self, optimizer: torch.optim.Optimizer) -> None:
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [name for p in self.pruners for name, t in p.modules.items() if id(t.weight) not in owned]
        if missing:
            raise ConfigError(
                f"the optimizer does not update the weights of {', '.join(missing)}; pass an optimizer built "
                f"from model.parameters() (after any model surgery), or call prepare_pruning without it and drive "
                f"the callbacks yourself"
            )
        self._optimizer_handles = [optimizer.register_step_pre_hook(self._pre_step),
                                   optimizer.register_step_post_hook(self._post_step)]
        self.session.on_train_begin()

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self._sync_step()
        self.session.on_step_begin()
        self.session.on_before_optimizer_step()

    def _post_step(self, optimizer, args, kwargs) -> None:
        self.session.on_after_optimizer_step()
        self.session.on_step_end()
        self._advance_step()

    # ---- INC callbacks (manual mode) -------------------------------------------------------------
    def _manual(self, what: str) -> None:
        if self._optimizer_handles:
            raise PruningStateError(
                f"{what}() is driven by the optimizer's step hooks because prepare_pruning got an optimizer; "
                f"remove the call, or prepare without an optimizer to drive the callbacks yourself"
            )

    def on_train_begin(self, dataloader: Any = None) -> None:
        if not self._optimizer_handles:
            self.session.on_train_begin(dataloader)

    def on_epoch_begin(self, epoch: int) -> None:
        self.session.on_epoch_begin(epoch)

    def on_step_begin(self, local_step: Optional[int] = None) -> None:
        self._manual("on_step_begin")
        self._sync_step()
        self.session.on_step_begin(local_step)

    def on_before_optimizer_step(self) -> None:
        self._manual("on_before_optimizer_step")
        self.session.on_before_optimizer_step()

    def on_after_optimizer_step(self) -> None:
        self._manual("on_after_optimizer_step")
        self.session.on_after_optimizer_step()

    def on_step_end(self) -> None:
        self._manual("on_step_end")
        self.session.on_step_end()
        self._advance_step()

    def on_epoch_end(self) -> None:
        self.session.on_epoch_end()

    def on_train_end(self) -> None:
        self.session.on_train_end()

    # ---- one-shot ------------------------------------------------------------------------------
    def prune_now(self, dataloader: Optional[Iterable] = None, loss_func: Optional[Callable] = None,
                  max_batches: Optional[int] = None) -> None:
        """Prune every group to its final target at once.

        Gradient criteria (``snip``, ``snip_momentum``, ``gradient``) need ``dataloader``: its batches are run
        forward and backward (no weight update) to build the scores. ``loss_func(output, target)`` computes
        the loss; without it the model's output must have a ``loss`` attribute.
        """
        self.session.on_train_begin(dataloader)
        if self.session.needs_grad:
            if dataloader is None:
                kinds = sorted({p.config["pruning_type"] for p in self.pruners if p.needs_grad})
                raise ConfigError(
                    f"pruning_type {', '.join(kinds)} scores weights by their gradients; pass a dataloader "
                    f"(and loss_func) for one-shot pruning, or use pruning_type='magnitude'"
                )
            self._accumulate_scores(dataloader, loss_func, max_batches)
        for p in self.pruners:
            if p.__class__.__name__.endswith("PatternLockPruner"):
                continue
            p.update_masks(p.scheduler.last_pruning_step())
        self.session.global_step = max(p.scheduler.last_pruning_step() + 1 for p in self.pruners)
        self._advance_step()

    def _accumulate_scores(self, dataloader, loss_func, max_batches) -> None:
        was_training = self.model.training
        self.model.train()
        params = [t.weight for p in self.pruners for t in p.modules.values()]
        saved = [w.grad for w in params]
        try:
            total = max_batches if max_batches is not None else _length(dataloader)
            for i, batch in enumerate(progress(dataloader, total=total, desc="one-shot scores")):
                if max_batches is not None and i >= max_batches:
                    break
                for w in params:
                    w.grad = None
                loss = _batch_loss(self.model, batch, loss_func)
                loss.backward()
                for p in self.pruners:
                    if p.needs_grad:
                        p.update_scores()
        finally:
            for w, g in zip(params, saved):
                w.grad = g
            self.model.train(was_training)

    # ---- reporting and clean-up ---------------------------------------------------------------
    def report(self) -> SparsityReport:
        """Per-layer and total sparsity of the pruned weights."""
        return sparsity_report(self.model, self.session.layer_patterns())

    @property
    def masks(self) -> Dict[str, torch.Tensor]:
        return {name: m for p in self.pruners for name, m in p.masks.items()}

    def remove(self) -> None:
        """Detach the hooks; masks and weights stay as they are."""
        for h in self._optimizer_handles + self._module_handles:
            h.remove()
        self._optimizer_handles, self._module_handles = [], []
        if _LIVE.get(self.model) is self:
            del _LIVE[self.model]

    def strip(self) -> nn.Module:
        """See :func:`strip`."""
        return strip(self.model)


def _length(iterable: Any) -> Optional[int]:
    try:
        return len(iterable)
    except TypeError:
        return None


def _batch_loss(model: nn.Module, batch: Any, loss_func: Optional[Callable]) -> torch.Tensor:
    if isinstance(batch, dict):
        out = model(**batch)
        target = None
    elif isinstance(batch, (list, tuple)) and len(batch) == 2:
        out = model(batch[0])
        target = batch[1]
    else:
        out = model(batch)
        target = None
    if loss_func is not None:
        return loss_func(out, target) if target is not None else loss_func(out)
    loss = getattr(out, "loss", None)
    if loss is None:
        raise ConfigError("one-shot pruning with a gradient criterion needs loss_func(output, target), "
                          "or a model whose output has a .loss attribute")
    return loss


def prepare_pruning(model: nn.Module, config, optimizer: Optional[torch.optim.Optimizer] = None,
                    dataloader: Optional[Iterable] = None, loss_func: Optional[Callable] = None) -> TorchPruning:
    """Prepare ``model`` for pruning as ``config`` describes (INC's ``prepare_pruning``).

    Args:
        model: the torch model; its Linear, Conv1d/2d/3d and transformers ``Conv1D`` weights are candidates.
        config: a :class:`~nc_prune.WeightPruningConfig` (or a dict of its keys).
        optimizer: training-time pruning follows this optimizer's steps through its step hooks.
        dataloader: one-shot pruning now, with scores from these batches for gradient criteria.
        loss_func: ``loss_func(output, target)`` for one-shot gradient scores.

    Returns:
        A :class:`TorchPruning`; with neither optimizer nor dataloader, drive its callbacks yourself.
    """
    if optimizer is not None and dataloader is not None:
        raise ConfigError(
            "pass an optimizer (pruning during training) or a dataloader (one-shot pruning now), not both"
        )
    pruning = TorchPruning(model, config, optimizer)
    if dataloader is not None:
        pruning.prune_now(dataloader, loss_func)
    return pruning


def sparsity_report(model: nn.Module, patterns: Optional[Dict[str, str]] = None) -> SparsityReport:
    """Sparsity of every prunable weight of ``model`` (Linear, Conv, ``Conv1D``), per layer and total."""
    if patterns is None:
        live = _LIVE.get(model)
        patterns = live.session.layer_patterns() if live is not None else {}
    _, targets = find_targets(model)
    rows = {name: t.canonical(t.weight.detach()).cpu().float().numpy() for name, t in targets.items()}
    return SparsityReport.from_arrays(rows, patterns)


def strip(model: nn.Module) -> nn.Module:
    """Make ``model`` a plain model again, in place, and return it.

    Masks are applied a last time, then every nc_prune hook and buffer is removed: the weights keep their
    zeros and ``model.state_dict()`` loads into an unpruned copy of the architecture.
    """
    live = _LIVE.get(model)
    if live is not None:
        live.remove()
    from .layers import MASK_SUFFIX, SCORE_SUFFIX
    with torch.no_grad():
        for module in model.modules():
            for buf_name in [b for b in module._buffers if b.endswith(MASK_SUFFIX)]:
                param = buf_name[: -len(MASK_SUFFIX)]
                getattr(module, param).mul_(module._buffers[buf_name])
                del module._buffers[buf_name]
            for buf_name in [b for b in module._buffers if b.endswith(SCORE_SUFFIX)]:
                del module._buffers[buf_name]
            hooks = module._load_state_dict_post_hooks
            for key in [k for k, h in hooks.items() if isinstance(h, ReapplyMask)]:
                del hooks[key]
    model._buffers.pop(STEP_BUFFER, None)
    return model
