"""``HFPruningCallback``: pruning inside ``transformers.Trainer.train()``."""

from __future__ import annotations


from transformers import TrainerCallback

from ._common import DrivenByPruning, PruningDriver

_RESUME_HINT = ("Pass the callback when building the Trainer — Trainer(..., callbacks=[HFPruningCallback(config)]) — "
                "rather than with trainer.add_callback() afterwards, so the model has its pruning buffers before "
                "train(resume_from_checkpoint=...) loads the checkpoint")


class HFPruningCallback(DrivenByPruning, TrainerCallback):
    """Prune a model while ``transformers.Trainer`` trains it: ``Trainer(..., callbacks=[HFPruningCallback(config)])``.

    At the end of ``Trainer.__init__`` the model is prepared for pruning (its mask, score and step buffers
    are added, so a checkpoint loads into them); at ``on_train_begin``, once the Trainer has built its
    optimizer, pruning is tied to that optimizer (inside Accelerate's wrapper) with
    :func:`~nc_prune.torch.prepare_pruning`. From then on every optimizer step prunes as in a hand-written
    loop: the step counter counts optimizer steps — ``state.global_step``, whatever
    ``gradient_accumulation_steps`` is — and masked weights are exactly zero after each step.

    Pruning state is buffers of the model, so Trainer's checkpoints (``model.safetensors``) carry it and
    ``trainer.train(resume_from_checkpoint=...)`` resumes masks, scores and step exactly.
    ``trainer.save_model()`` writes the pruned weights (zeros in place) with those buffers; call
    :func:`~nc_prune.torch.strip` on ``trainer.model`` first for a file without them.

    Args:
        config: a :class:`~nc_prune.WeightPruningConfig` (or a dict of its keys) of training-time pruning
            types; one-shot-only ones (``sparse_gpt``, ``wanda``, ``retrain_free``) are refused here.

    Attributes:
        pruning: the :class:`~nc_prune.torch.TorchPruning` of the model (``report()``, ``global_step``,
            ``masks``), or None before the callback has seen a model.
    """

    def __init__(self, config) -> None:
        self._driver = PruningDriver(config, "HFPruningCallback", another_model_hint=(
            ". Trainer(model_init=...) builds a new model at every train(), which one callback cannot follow: "
            "build the model yourself and pass Trainer(model=...)"))

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._driver.bind(model, early=True)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._driver.attach(model, optimizer, "Trainer's on_train_begin")
        self._driver.check_step(state.global_step, _RESUME_HINT)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.pruning is not None:
            self.pruning.on_epoch_begin(int(state.epoch or 0))

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.pruning is not None:
            self.pruning.on_epoch_end()

    def on_train_end(self, args, state, control, **kwargs):
        if self.pruning is not None:
            self.pruning.on_train_end()
