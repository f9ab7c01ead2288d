"""``BasePruner``: scores, masks, pattern and schedule, with the step logic free of any framework.

A backend subclass (``PytorchBasePruner``, ``KerasBasePruner``) supplies the *glue*: reading a weight or
its gradient, converting to the canonical numpy layout and back, storing a mask and zeroing weights.
Everything that decides *what* to prune lives here and in the patterns.

One training step, in order:

1. ``on_step_begin`` — nothing to do by default.
2. ``on_before_optimizer_step`` (gradients are ready) — gradient criteria update their scores;
   at a pruning step new masks are computed; a regularizer adds its term to the gradients.
3. ``on_after_optimizer_step`` — masked weights are set back to exactly zero.
4. ``on_step_end`` — the step counter advances.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .config import DEFAULTS, resolve_pruning_type
from .errors import PruningStateError
from .parameters import Param
from .patterns.base import Pattern, get_pattern
from .registry import CRITERIA, PRUNERS, REGULARIZERS, register_pruner
from .schedulers import Scheduler, get_scheduler

logger = logging.getLogger(__name__)


class StepCounter:
    """The step counter: optimizer steps seen so far, kept in one place.

    A :class:`~nc_prune.core.session.PruningSession` owns one and hands it to each of its pruners, which read
    it through :attr:`BasePruner.global_step` and never keep a count of their own: the session alone advances
    it (once per ``on_step_end``). A backend passes a subclass that reads and writes the step where the model
    stores it — torch: the model's ``nc_prune_step`` buffer (:class:`nc_prune.torch.state.ModelStep`) — so
    loading a checkpoint sets the one count every object reads, and no copy is left behind to go stale. A
    pruner built alone gets a counter of its own and advances it itself.
    """

    def __init__(self, value: int = 0) -> None:
        self._value = int(value)

    def get(self) -> int:
        return self._value

    def set(self, value: int) -> None:
        self._value = int(value)


class BasePruner:
    """Prunes one group of layers (INC's ``BasePruner``).

    Args:
        config: a resolved group config (one entry of ``WeightPruningConfig.groups``).
        modules: ``{layer name: framework handle}``; the backend decides what a handle is.

    Attributes:
        modules: ``{layer name: framework handle}`` of the layers this pruner owns.
        config: the resolved group config.
        masks: ``{layer name: keep-mask}`` in the framework's storage (True = keep).
        scores: ``{layer name: score}`` of a gradient criterion (framework tensors).
        pattern: the :class:`~nc_prune.core.patterns.base.Pattern` that splits weights into units.
        scheduler: the :class:`~nc_prune.core.schedulers.Scheduler` giving the target at each step.
        current_sparsity_ratio: fraction of masked weights after the latest mask update.
        global_step: optimizer steps seen so far, read from :attr:`step_counter` (the session's, when a
            session drives the pruner).
        step_counter: the :class:`StepCounter` this pruner reads its step from.
        start_step: first pruning step.
        end_step: last step of the pruning window.
        pruning_frequency: steps between two mask updates.
        target_sparsity_ratio: the sparsity reached at the last pruning step.
        max_sparsity_ratio_per_op: upper bound of each layer's sparsity.
        min_sparsity_ratio_per_op: lower bound of each layer's sparsity.
    """

    #: Keys this pruner reads from the group's ``parameters`` (see :mod:`nc_prune.core.parameters`).
    PARAMETERS: Dict[str, Param] = {}
    #: False for pruners that ignore ``target_sparsity`` (its N:M bound is then not checked).
    uses_target: bool = True
    #: True for pruners that prune a trained model at once from calibration data and cannot follow training
    #: (``sparse_gpt``, ``wanda``, ``retrain_free``): backends refuse them for training-time pruning.
    one_shot_only: bool = False
    #: Per-layer state this pruner keeps beside the mask, ``{key: (numpy dtype name, fill value)}``, one entry
    #: per weight in the canonical layout. Backends store it with the mask (torch buffers, Keras optimizer
    #: variables), so it is saved in checkpoints and a resume continues exactly.
    LAYER_STATE: Dict[str, Tuple[str, int]] = {}

    def __init__(self, config: Mapping[str, Any], modules: Mapping[str, Any]) -> None:
        cfg = dict(DEFAULTS)
        cfg.update(config)
        self.config: Dict[str, Any] = cfg
        self.modules: Dict[str, Any] = dict(modules)
        self.couplings: List[Any] = []  # units spanning layers this pruner ranks (set by the session)
        self.masks: Dict[str, Any] = {}
        self.scores: Dict[str, Any] = {}
        self.pattern: Pattern = get_pattern(cfg)
        self.scheduler: Scheduler = get_scheduler(cfg)
        _, criterion = resolve_pruning_type(cfg["pruning_type"])
        self.criterion = CRITERIA.get(criterion)(cfg) if criterion else None
        self.reg = REGULARIZERS.get(cfg["reg_type"])(cfg, self.pattern) if cfg["reg_type"] else None
        self.current_sparsity_ratio = 0.0
        self.step_counter: StepCounter = StepCounter()
        self._owns_step = True  # False once a session shares its counter: the session advances it
        self.start_step: int = cfg["start_step"]
        self.end_step: int = cfg["end_step"]
        self.pruning_frequency: int = cfg["pruning_frequency"]
        self.target_sparsity_ratio: float = cfg["target_sparsity"]
        self.max_sparsity_ratio_per_op: float = cfg["max_sparsity_ratio_per_op"]
        self.min_sparsity_ratio_per_op: float = cfg["min_sparsity_ratio_per_op"]

    # ---- glue: implemented by each backend ----------------------------------------------------
    def _weight(self, name: str) -> Any:
        """The layer's weight as a framework tensor (native layout)."""
        raise NotImplementedError

    def _grad(self, name: str) -> Any:
        """The weight's gradient as a framework tensor, or None when there is none."""
        raise NotImplementedError

    def _to_canonical(self, name: str, value: Any) -> np.ndarray:
        """A framework tensor of the weight's native layout → numpy in ``(out, in, *kernel)``."""
        raise NotImplementedError

    def _get_mask(self, name: str) -> np.ndarray:
        """The current keep-mask, numpy bool, canonical layout."""
        raise NotImplementedError

    def _set_mask(self, name: str, keep: np.ndarray) -> None:
        """Store a canonical numpy keep-mask in the framework's mask storage."""
        raise NotImplementedError

    def _apply_masks(self) -> None:
        """Zero every masked weight in place."""
        raise NotImplementedError

    def _add_to_grad(self, name: str, term: np.ndarray) -> None:
        """Add a canonical numpy array to the weight's gradient."""
        raise NotImplementedError

    def _canonical_weight(self, name: str) -> Any:
        """The weight in the canonical layout as the framework's own array (on its device), for the one-shot
        maths (:mod:`nc_prune.core.oneshot`), which runs on it without a copy to numpy."""
        raise NotImplementedError

    def _write_weight(self, name: str, canonical: Any) -> None:
        """Write new weights, given in the canonical layout as returned by :meth:`_canonical_weight`."""
        raise NotImplementedError

    def _missing_grad_hint(self, name: str) -> str:
        """Why the layer may have had no gradient, and the fix (backends know more, e.g. ``requires_grad``)."""
        return ("call loss.backward() before the optimizer step; if the loss does not depend on the layer, leave it "
                "out with excluded_op_names or use pruning_type='magnitude'")

    def _get_state(self, name: str, key: str) -> np.ndarray:
        """The layer's :attr:`LAYER_STATE` entry ``key`` (canonical numpy). Backends persist it; this default
        keeps it in memory, so a glue class without storage of its own still runs every pruner."""
        store = self.__dict__.setdefault("_layer_state", {}).setdefault(name, {})
        if key not in store:
            dtype, fill = self.LAYER_STATE[key]
            store[key] = np.full(self._get_mask(name).shape, fill, dtype=dtype)
        return store[key]

    def _set_state(self, name: str, key: str, value: np.ndarray) -> None:
        """Store the layer's :attr:`LAYER_STATE` entry ``key`` (canonical numpy)."""
        self.__dict__.setdefault("_layer_state", {}).setdefault(name, {})[key] = np.asarray(value)

    # ---- step ----------------------------------------------------------------------------------
    @property
    def global_step(self) -> int:
        return self.step_counter.get()

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.step_counter.set(value)

    def share_step(self, counter: StepCounter) -> None:
        """Read the step from ``counter`` (a session's), which its owner advances: ``on_step_end`` no longer
        counts."""
        self.step_counter, self._owns_step = counter, False

    # ---- schedule ------------------------------------------------------------------------------
    @property
    def needs_grad(self) -> bool:
        return self.criterion is not None and self.criterion.needs_grad

    def in_window(self, step: Optional[int] = None) -> bool:
        step = self.global_step if step is None else step
        return self.start_step <= step <= self.end_step

    def is_pruning_step(self, step: Optional[int] = None) -> bool:
        return self.scheduler.is_pruning_step(self.global_step if step is None else step)

    def is_done(self, step: Optional[int] = None) -> bool:
        """True once the last pruning step is behind; only masks are applied from then on."""
        step = self.global_step if step is None else step
        return step > self.scheduler.last_pruning_step()

    # ---- callbacks (INC names) ---------------------------------------------------------------
    def on_train_begin(self, dataloader: Any = None) -> None:
        if self.config["resume_from_pruned_checkpoint"]:
            self.adopt_existing_zeros()

    def adopt_existing_zeros(self) -> None:
        """Mask the weights that are already zero (INC's ``resume_from_pruned_checkpoint``).

        For a checkpoint saved by a pruner that kept no masks: its zeros stay zero, and the schedule
        continues from there. Layers whose masks already prune something are left as they are.
        """
        for name in self.modules:
            if bool(self._get_mask(name).all()):
                self._set_mask(name, self._to_canonical(name, self._weight(name)) != 0)
        self.current_sparsity_ratio = self.pattern.get_sparsity_ratio({n: self._get_mask(n) for n in self.modules})

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_step_begin(self, local_step: Optional[int] = None) -> None:
        pass

    def on_before_optimizer_step(self) -> None:
        if self.needs_grad and self.in_window():
            self.update_scores()
        if self.is_pruning_step():
            self.update_masks(self.global_step)
        if self.reg is not None and self.in_window() and self.reg.coeff > 0:
            for name in self.modules:
                self._add_to_grad(name, self.reg.grad_term(name, self._to_canonical(name, self._weight(name))))

    def on_after_optimizer_step(self) -> None:
        self._apply_masks()

    def on_step_end(self) -> None:
        if self._owns_step:  # a session's pruners share its counter, which the session advances once
            self.global_step += 1

    def on_epoch_end(self) -> None:
        pass

    def on_train_end(self) -> None:
        pass

    # ---- scores and masks --------------------------------------------------------------------
    def update_scores(self) -> None:
        """Fold the current gradients into the scores of a gradient criterion."""
        for name in self.modules:
            grad = self._grad(name)
            if grad is None:
                continue
            self.scores[name] = self.criterion.score(self._weight(name), grad, self.scores.get(name))

    def current_scores(self) -> Dict[str, np.ndarray]:
        """Canonical numpy scores for mask computation."""
        return {name: self._to_canonical(name, self._native_score(name)) for name in self.modules}

    def _native_score(self, name: str) -> Any:
        """The layer's score for mask computation as the framework's tensor, in the weight's native layout."""
        if self.criterion is not None and not self.criterion.needs_grad:
            return self.criterion.score(self._weight(name), None, None)
        native = self.scores.get(name)
        if native is None and self.criterion is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no criterion and no score for layer {name!r}; a pruner "
                f"registered without a criterion must fill self.scores or override current_scores()"
            )
        if native is None:
            raise PruningStateError(
                f"pruning_type={self.config['pruning_type']!r} scores weights by their gradients, but layer "
                f"{name!r} had no gradient at step {self.global_step}: {self._missing_grad_hint(name)}"
            )
        return native

    def _mask_sparsity(self) -> float:
        """Fraction of masked weights over the pruner's layers (backends may count on their own tensors)."""
        return self.pattern.get_sparsity_ratio({n: self._get_mask(n) for n in self.modules})

    def target_at(self, step: int) -> float:
        return self.scheduler.update_sparsity_ratio(step)

    def compute_new_masks(self, step: int) -> Dict[str, np.ndarray]:
        """Keep-masks for ``step`` without storing them."""
        pre = {name: self._get_mask(name) for name in self.modules}
        return self.pattern.get_masks(self.current_scores(), self.target_at(step), pre, self.max_sparsity_ratio_per_op)

    def update_masks(self, step: int) -> None:
        """Compute and store masks for ``step``, then zero the pruned weights."""
        masks = self.compute_new_masks(step)
        for name, keep in masks.items():
            self._set_mask(name, keep)
        self._apply_masks()
        self.current_sparsity_ratio = self._mask_sparsity()
        logger.info("step %d: %s sparsity %.4f (target %.4f)", step, self.config["pattern"],
                    self.current_sparsity_ratio, self.target_at(step))


@register_pruner("basic")
class BasicPruner(BasePruner):
    """Masks recomputed from the criterion's scores at every pruning step (INC's basic pruner)."""


@register_pruner("pattern_lock")
class PatternLockPruner(BasePruner):
    """Keeps the zeros a model already has: masks are taken from the weights once and never change."""

    uses_target = False

    def on_train_begin(self, dataloader: Any = None) -> None:
        self.adopt_existing_zeros()

    def is_pruning_step(self, step: Optional[int] = None) -> bool:
        return False

    def is_done(self, step: Optional[int] = None) -> bool:
        return True


#: Stage of a weight that the current interval's plan does not prune.
NO_STAGE = 255


@register_pruner("progressive")
class ProgressivePruner(BasePruner):
    """Each pruning step's new blocks are pruned in ``progressive_steps`` stages over the interval.

    At a pruning step the target mask is computed as usual; the units it newly prunes are ordered by
    score (``progressive_type="scores"``) or by position (``"linear"``); at stage ``j`` (of ``p``) a layer
    has pruned the first ``floor(new * j / p)`` of them. Stages are evenly spaced before the next pruning
    step. The last pruning step applies its mask at once, so the target holds from ``end_step`` on.

    The plan is layer state (``LAYER_STATE["stage"]``: the stage at which each weight goes, 255 for none),
    saved with the masks, and the stage a step starts follows from the schedule alone — so a checkpoint
    taken between two stages resumes exactly.
    """

    LAYER_STATE = {"stage": ("uint8", NO_STAGE)}

    def __init__(self, config, modules) -> None:
        super().__init__(config, modules)
        self.progressive_steps: int = self.config["progressive_steps"]
        self.progressive_type: str = self.config["progressive_type"]

    def _stage_step(self, step: int) -> Optional[int]:
        """Which stage (1..p-1) ``step`` starts, or None: stages lie strictly between a pruning step that is
        not the last one and the next."""
        start, f, p = self.start_step, self.pruning_frequency, self.progressive_steps
        if p == 1 or not start < step < self.scheduler.last_pruning_step():
            return None
        offset = (step - start) % f
        gap = max(f // p, 1)
        if offset > 0 and offset % gap == 0 and offset // gap < p:
            return offset // gap
        return None

    def on_before_optimizer_step(self) -> None:
        stage = self._stage_step(self.global_step)
        if stage is not None:
            self._apply_stage(stage)
        super().on_before_optimizer_step()

    def update_masks(self, step: int) -> None:
        if step >= self.scheduler.last_pruning_step() or self.progressive_steps == 1 or self.couplings:
            # stages split units within layers; heads and channels spanning layers are pruned whole, at once
            for name in self.modules:
                self._set_state(name, "stage", np.full(self._get_mask(name).shape, NO_STAGE, dtype=np.uint8))
            return super().update_masks(step)
        old = {name: self._get_mask(name) for name in self.modules}
        scores = self.current_scores()
        new = self.pattern.get_masks(scores, self.target_at(step), old, self.max_sparsity_ratio_per_op)
        p = self.progressive_steps
        for name in self.modules:
            units = self.pattern.layer_units(name, old[name].shape)
            unit_scores = units.reduce(scores[name], self.pattern.reduce_type, old[name])
            fresh = np.flatnonzero(units.already_pruned(new[name]) & ~units.already_pruned(old[name]))
            if self.progressive_type == "scores":
                fresh = fresh[np.argsort(unit_scores[fresh], kind="stable")]
            stage = np.full(old[name].shape, NO_STAGE, dtype=np.uint8)
            for k in range(p):
                prune = np.zeros(units.n_units, dtype=bool)
                prune[fresh[len(fresh) * k // p: len(fresh) * (k + 1) // p]] = True
                stage[units.expand(prune)] = k
            self._set_state(name, "stage", stage)
        self._apply_stage(0)

    def _apply_stage(self, stage: int) -> None:
        for name in self.modules:
            self._set_mask(name, self._get_mask(name) & (self._get_state(name, "stage") > stage))
        self._apply_masks()
        self.current_sparsity_ratio = self.pattern.get_sparsity_ratio({n: self._get_mask(n) for n in self.modules})


def get_pruner_class(config: Mapping[str, Any]) -> type:
    name, _ = resolve_pruning_type(config["pruning_type"])
    return PRUNERS.get(name)
