"""``LightningPruningCallback``: pruning inside ``lightning.pytorch.Trainer.fit()`` (or ``pytorch_lightning``'s)."""

from __future__ import annotations

from typing import Any, List, Optional

import torch

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback

from ...core.errors import ConfigError, PruningStateError
from ._common import DrivenByPruning, PruningDriver, inner_optimizer

_RESUME_HINT = "Resume with trainer.fit(model, ckpt_path=...) on a Trainer built with this callback"


class LightningPruningCallback(DrivenByPruning, Callback):
    """Prune a ``LightningModule`` while Lightning trains it: ``Trainer(callbacks=[LightningPruningCallback(config)])``.

    At ``setup`` the module is prepared for pruning (its mask, score and step buffers are added before
    ``fit(ckpt_path=...)`` restores a checkpoint into them). Lightning runs the forward and backward pass
    *inside* ``optimizer.step(closure)``, after the optimizer's pre-step hooks, so gradients are not ready
    there; pruning is therefore driven through INC's callbacks instead: ``on_before_optimizer_step``
    (gradients ready, before clipping and the update) folds gradient scores in and prunes at pruning steps,
    and a post-step hook on the optimizer re-zeroes the masked weights after the update and counts the step.
    The count is optimizer steps, as ``trainer.global_step`` (``accumulate_grad_batches`` included).

    The state lives in ``pl_module.state_dict()``, so Lightning checkpoints carry it and
    ``trainer.fit(model, ckpt_path=...)`` resumes masks, scores and step exactly.

    Args:
        config: a :class:`~nc_prune.WeightPruningConfig` (or a dict of its keys) of training-time pruning
            types; one-shot-only ones (``sparse_gpt``, ``wanda``, ``retrain_free``) are refused here.
        optimizer_index: which of ``trainer.optimizers`` updates the pruned weights; by default the only one,
            or the first that updates all of them.

    Attributes:
        pruning: the :class:`~nc_prune.torch.TorchPruning` of the module, or None before ``setup``.
    """

    def __init__(self, config, optimizer_index: Optional[int] = None) -> None:
        super().__init__()
        self._driver = PruningDriver(config, "LightningPruningCallback")
        self.optimizer_index = optimizer_index
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._handle: Any = None
        self._pending = False

    # ---- Lightning hooks ----------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._driver.bind(pl_module, early=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._driver.bind(pl_module, early=False)
        opt = self._pick(list(trainer.optimizers))
        if opt is not self._optimizer:  # a new fit() builds new optimizers: follow the new one
            self._detach()
            self._handle = opt.register_step_post_hook(self._after_step)
            self._optimizer = opt
        self._pending = False

    def on_train_start(self, trainer, pl_module) -> None:  # after Lightning restored its loops (global_step)
        self._driver.check_step(trainer.global_step, _RESUME_HINT)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.pruning.on_epoch_begin(trainer.current_epoch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._optimizer is None or inner_optimizer(optimizer) is not self._optimizer:
            return  # another optimizer (a GAN's discriminator, say)
        if self._pending:  # the last step never ran (a GradScaler skipped it on inf gradients): close it
            self._finish_step()
        self.pruning.on_step_begin()
        self.pruning.on_before_optimizer_step()
        self._pending = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.pruning.on_epoch_end()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._pending:
            self._finish_step()
        self.pruning.on_train_end()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._detach()

    # ---- the optimizer ----------------------------------------------------------------------------
    def _after_step(self, optimizer, args, kwargs) -> None:
        if not self._pending:
            raise PruningStateError(
                "the optimizer stepped without Lightning's on_before_optimizer_step, so this step was not pruned "
                "and pruning's step count falls behind trainer.global_step. With manual optimization call step() "
                "on self.optimizers() (Lightning's wrapper), not on the torch optimizer itself"
            )
        self._finish_step()

    def _finish_step(self) -> None:
        self._pending = False
        self.pruning.on_after_optimizer_step()
        self.pruning.on_step_end()

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._optimizer, self._pending = None, None, False

    def _pick(self, optimizers: List[Any]) -> torch.optim.Optimizer:
        owner = "LightningPruningCallback"
        if not optimizers:
            raise ConfigError(f"{owner} found no optimizer at on_fit_start: pruning follows the optimizer's "
                              f"steps, so configure_optimizers() must return one that updates the pruned weights")
        if self.optimizer_index is not None:
            if not 0 <= self.optimizer_index < len(optimizers):
                raise ConfigError(f"{owner}(optimizer_index={self.optimizer_index}) but configure_optimizers() "
                                  f"gave {len(optimizers)} optimizer(s); pass an index below {len(optimizers)}")
            candidates = [inner_optimizer(optimizers[self.optimizer_index])]
        else:
            candidates = [inner_optimizer(o) for o in optimizers]
        first_error = None
        for opt in candidates:
            if not isinstance(opt, torch.optim.Optimizer):
                raise ConfigError(f"{owner} needs torch.optim.Optimizer optimizers, got {type(opt).__name__}")
            try:
                self.pruning._check_optimizer(opt)
                return opt
            except ConfigError as err:
                first_error = first_error or err
        raise ConfigError(f"{owner}: no optimizer from configure_optimizers() updates every pruned weight: "
                          f"{first_error}") from first_error
