"""What both framework callbacks share: one model's pruning, prepared early and tied to the framework's optimizer.

The order matters for resuming. Both frameworks load a checkpoint's weights into the model *before* they
build (or hand out) the optimizer, and nc_prune's state — masks, scores, the step counter — is buffers of the
model. So the callback prepares pruning without an optimizer as soon as it sees the model (``Trainer``'s
``on_init_end``, Lightning's ``setup``): the buffers then exist when the checkpoint loads and are filled from
it. When the optimizer exists the callback prepares again with it; ``prepare_pruning`` reuses the buffers, so
the loaded masks, scores and step carry on.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import torch
from torch import nn

from ...core.errors import ConfigError, PruningStateError
from ...core.session import as_config, refuse_one_shot_only
from ..layers import unwrap
from ..pruning import TorchPruning, inner_optimizer, live_pruning, prepare_pruning


class PruningDriver:
    """One model's pruning for a framework callback named ``owner``."""

    def __init__(self, config, owner: str, another_model_hint: str = "") -> None:
        self.config = as_config(config)
        self.owner = owner
        self._another_model_hint = another_model_hint
        refuse_one_shot_only(self.config.groups, f"{owner} (which prunes while the framework trains)")
        self._model: Optional[weakref.ReferenceType] = None
        self._bound_early = False
        self.pruning: Optional[TorchPruning] = None

    # ---- the model -----------------------------------------------------------------------------
    def bind(self, model: Optional[nn.Module], early: bool) -> nn.Module:
        """Prepare pruning of ``model`` (without optimizer: its buffers now) the first time; refuse another model."""
        if not isinstance(model, nn.Module):
            raise PruningStateError(f"{self.owner} got no torch model from the framework (got "
                                    f"{type(model).__name__}); it prunes torch.nn.Module models only")
        root = unwrap(model)
        if self._model is not None:
            bound = self._model()
            if bound is not root:
                raise PruningStateError(
                    f"this {self.owner} already prunes another model"
                    + (f" ({type(bound).__name__} at {id(bound):#x})" if bound is not None else "")
                    + f"; one callback holds one model's pruning state (its masks and step). Create a new "
                    f"{self.owner}(config) for each model you train{self._another_model_hint}"
                )
            return root
        if live_pruning(root) is not None:
            raise PruningStateError(
                f"this {type(root).__name__} is already being pruned (by prepare_pruning or another callback); "
                f"{self.owner} prepares pruning itself, so two would fight over it: drop the prepare_pruning call, "
                f"reuse the callback that already prunes this model, or strip(model) first"
            )
        self.pruning = prepare_pruning(root, self.config)
        self._model = weakref.ref(root)
        self._bound_early = early
        return root

    # ---- the optimizer ---------------------------------------------------------------------------
    def attach(self, model: Optional[nn.Module], optimizer: Any, where: str) -> TorchPruning:
        """Let ``optimizer``'s steps drive pruning of ``model`` (idempotent for the same optimizer)."""
        root = self.bind(model, early=False)
        if optimizer is None:
            raise ConfigError(
                f"{self.owner} found no optimizer at {where}: pruning follows the optimizer's steps. Let the "
                f"framework build it (do not train with a DeepSpeed/FSDP setup that hides it), or prune in your own "
                f"loop with nc_prune.torch.prepare_pruning(model, config, optimizer)"
            )
        opt = inner_optimizer(optimizer)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ConfigError(f"{self.owner} needs a torch.optim.Optimizer, got {type(optimizer).__name__} at "
                              f"{where}; prune in your own loop with prepare_pruning(model, config, optimizer)")
        current = self.pruning
        if current is not None and current.optimizer is opt and live_pruning(root) is current:
            return current
        if current is not None:
            current.remove()  # hooks only: the buffers (masks, scores, step) stay and the new pruning adopts them
        self.pruning = prepare_pruning(root, self.config, opt)
        return self.pruning

    def check_step(self, framework_step: int, resume_hint: str) -> None:
        """Pruning's step counter against the framework's optimizer-step count when training (re)starts.

        Lower but not zero is fine: steps the optimizer skipped (fp16 loss scaling on inf gradients) are not
        pruning steps.
        """
        ours = self.pruning.global_step
        if ours == framework_step or 0 < ours < framework_step:
            return
        if ours == 0:
            if self._bound_early:
                raise PruningStateError(
                    f"training resumes at optimizer step {framework_step} from a checkpoint without pruning state "
                    f"(no nc_prune_step in its weights), so the pruning schedule would count from 0 while the "
                    f"framework counts from {framework_step}. To prune a dense checkpoint, load its weights into the "
                    f"model and train without resuming; to resume a pruning run, resume from one of its checkpoints"
                )
            raise PruningStateError(
                f"training resumes at optimizer step {framework_step} but the model holds no pruning state: "
                f"{self.owner} saw the model only after the checkpoint was loaded, so the checkpoint's masks and "
                f"step were dropped. {resume_hint}"
            )
        raise PruningStateError(
            f"the model has been pruned for {ours} optimizer steps but the framework starts at step "
            f"{framework_step}: a second training run without resuming restarts the framework's count, not "
            f"pruning's. Resume from a checkpoint so both counters agree, or strip(model) and use a new "
            f"{self.owner} to prune it anew"
        )


class DrivenByPruning:
    """What both callbacks expose of their driver: the config and the live pruning."""

    _driver: PruningDriver

    @property
    def config(self):
        """The :class:`~nc_prune.WeightPruningConfig` the callback prunes with."""
        return self._driver.config

    @property
    def pruning(self) -> Optional[TorchPruning]:
        """The model's :class:`~nc_prune.torch.TorchPruning`, or None before the callback has seen a model."""
        return self._driver.pruning
