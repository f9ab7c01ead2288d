"""``PruningCallback``: runs the core's pruning steps around Keras training steps.

A Keras training step is one compiled function; the callback runs between steps. For step ``t``:

* ``on_train_batch_begin(t)`` — pruners whose criterion reads only weights (magnitude, pattern_lock, …)
  run the core's before-optimizer-step logic: at a pruning step they compute new masks from the weights
  as they are *before* step ``t`` (what the torch backend sees at that point), and a regularizer's term
  for step ``t`` is handed to the optimizer wrapper. The masks zero the weights after step ``t``'s update, so
  its gradient is that of the weights before it, as on torch.
* the step itself — the :class:`~nc_prune.keras.optimizer.PruningOptimizer` folds step ``t``'s gradients
  into the scores (weights before the update), updates, and zeroes masked weights.
* ``on_train_batch_end(t)`` — pruners with a gradient criterion (gradient, snip, snip_momentum) run the
  same core logic for step ``t``, now that its gradients are in their scores. Their masks then zero the
  updated weights, which leaves exactly the state the torch backend reaches after step ``t``. (Their
  regularizer term is computed here and applied at step ``t + 1``.)

With ``steps_per_execution > 1`` Keras calls the callback once per block of steps; the same two hooks then run
inside each step, as a host call from the wrapper's ``apply`` (:meth:`PruningCallback.run_in_step`), at the
steps the schedule makes them act. Both ways run the core against a :class:`~nc_prune.keras.pruner.StateView`,
and reach the same state.

The callback also works without ``model.fit``: call ``on_train_begin()``, then
``on_train_batch_begin(i)`` / ``on_train_batch_end(i)`` around each ``callback.optimizer.apply(...)``
and ``on_train_end()`` — see ``docs/keras.md``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import keras

from ..core.errors import PruningStateError
from ..core.pruner import BasePruner, ProgressivePruner
from ..core.report import SparsityReport
from ..core.session import PruningSession
from .discovery import PrunableWeight
from .optimizer import PruningOptimizer, masked
from .pruner import StateView, to_numpy
from .report import planned_report

#: Largest step table baked into a compiled step (steps_per_execution > 1); beyond it the hooks run every step.
MAX_TABLE = 1 << 22

logger = logging.getLogger(__name__)


class PruningCallback(keras.callbacks.Callback):
    """Drives pruning from ``model.fit`` (pass it in ``callbacks=[...]``) or from a custom loop.

    Built by :func:`nc_prune.keras.prepare_pruning`.

    Attributes:
        session: the core :class:`~nc_prune.core.session.PruningSession` (one pruner per config group).
        optimizer: the :class:`PruningOptimizer` holding masks, scores and the step counter.
        weights: ``{name: PrunableWeight}`` of every pruned weight.
    """

    def __init__(self, session: PruningSession, optimizer: PruningOptimizer, weights: Dict[str, PrunableWeight],
                 model: keras.Model, external_optimizer: bool = False,
                 all_weights: Optional[List[PrunableWeight]] = None) -> None:
        super().__init__()
        self.session = session
        self.optimizer = optimizer
        self.weights = dict(weights)
        self._all_weights = list(all_weights) if all_weights is not None else list(self.weights.values())
        self._external = external_optimizer
        self._grad_pruners = [p for p in session.pruners if p.needs_grad]
        self._weight_pruners = [p for p in session.pruners if not p.needs_grad]
        self._collecting: List[Optional[bool]] = [None] * len(self._grad_pruners)
        self._step: Optional[int] = None  # mirror of the wrapper's step variable (see _current_step)
        self._exact = external_optimizer  # read the variable every batch instead of mirroring it
        self._removed = False
        self._view: Optional[StateView] = None  # the state the hooks run against, while they run
        self._in_step = False  # hooks run inside the compiled step (steps_per_execution > 1)
        self._tables: Dict[str, Optional[np.ndarray]] = {}
        self._weight_ids = {id(w.variable) for w in self.weights.values()}
        optimizer._score_hook = self._fold_gradients
        optimizer._held.owner = self
        self._prepared_for = model
        self.set_model(model)
        if keras.backend.backend() == "jax":
            for p in session.pruners:
                p.sync = self._sync

    def _sync(self) -> None:
        """On JAX, ``model.fit`` carries the variables' values outside them between steps; write them back before
        the callback reads or sets any (the trainer then reads them again for the next step). A no-op when they are
        current, and on the other backends."""
        if keras.backend.backend() == "jax":
            sync = getattr(self._prepared_for, "jax_state_sync", None)
            if sync is not None:
                sync()

    def set_model(self, model: keras.Model) -> None:
        """Keras hands the callback the model it trains; it must be the one the callback was prepared for."""
        if model is not self._prepared_for:
            raise PruningStateError(
                f"this pruning callback was prepared for model {self._prepared_for.name!r}, but model.fit of "
                f"{getattr(model, 'name', model)!r} was given it; call prepare_pruning(model, config) for that "
                f"model and pass its own callback"
            )
        super().set_model(model)

    # ---- state -------------------------------------------------------------------------------
    @property
    def global_step(self) -> int:
        """Optimizer steps taken since pruning was prepared (saved with the model)."""
        return self.optimizer.prune_step

    def _check_live(self) -> None:
        if self._removed:
            raise PruningStateError(
                "this pruning callback was detached by strip() or by a newer prepare_pruning(); "
                "create a new one with nc_prune.keras.prepare_pruning(model, config)"
            )
        if self.optimizer._held.owner is not self:
            self._removed = True
            self._check_live()

    def detach(self) -> None:
        """Stop driving the optimizer (``strip`` calls this)."""
        if self.optimizer._held.owner is self:
            self.optimizer._score_hook = None
            self.optimizer._held.owner = None
            self.optimizer._held.hooks = None
        self._removed = True

    # ---- Keras callback API ------------------------------------------------------------------
    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self._check_live()
        self._ensure_installed()
        spe = getattr(self.model, "steps_per_execution", 1) or 1
        multi = not self._external and int(spe) != 1
        if multi and keras.backend.backend() == "tensorflow" and getattr(self.model, "jit_compile", False):
            raise PruningStateError(
                f"model.compile(steps_per_execution={spe}, jit_compile=True): with more than one step per call the "
                f"pruning hooks run inside the compiled steps as a host call (tf.numpy_function), which XLA cannot "
                f"compile; compile with jit_compile=False (or steps_per_execution=1 to keep XLA)"
            )
        replicas = getattr(getattr(self.model, "distribute_strategy", None), "num_replicas_in_sync", 1)
        if multi and replicas > 1:
            raise PruningStateError(
                f"model.compile(steps_per_execution={spe}) under a tf.distribute strategy with {replicas} replicas: "
                f"the pruning hooks inside the compiled steps would run once per replica and their writes cannot "
                f"sit in the run-time branch the step needs; compile with steps_per_execution=1 under the strategy"
            )
        self._sync()
        self.optimizer.active = True
        self._exact = self._external or isinstance(getattr(self.model, "optimizer", None),
                                                   keras.optimizers.LossScaleOptimizer)
        step = self._step = self.optimizer.prune_step
        self.session.global_step = step
        self.session.on_train_begin()
        self._sync_collect(step)
        self._in_step = multi
        if multi:
            self._tables = {kind: self._step_table(kind) for kind in ("begin", "end")}
        held = self.optimizer._held
        held.hooks = self if multi else None
        retrace = held.traced_hooks is not held.hooks and (multi or held.traced_hooks is not None)
        if self._grad_pruners and self.optimizer._traced_scores is False and not self._external:
            retrace = True  # traced before a callback was attached: add the scores
        if retrace and not self._external:
            self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._check_live()
        self._sync()
        self._step = self.optimizer.prune_step
        self.session.on_epoch_begin(epoch)

    def _current_step(self) -> int:
        """The wrapper's step counter. Within ``model.fit`` (one optimizer step per batch, checked at every
        epoch start) a Python mirror is used: reading the variable every batch would stall the pipeline.
        A custom loop reads the variable each time, whatever it does between the hooks, and so does a loss-scaled
        ``fit``, whose steps with non-finite gradients are skipped (and not counted, as torch's GradScaler skips
        ``optimizer.step``)."""
        if self._exact or self._step is None:
            self._sync()
            self._step = self.optimizer.prune_step
        return self._step

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        self._check_live()
        if self._in_step:
            return  # the hooks run inside the compiled steps (see PruningOptimizer._run_hooks)
        if self._external:
            self._sync()
        if self._external and not self.optimizer.active:
            raise PruningStateError(
                "call callback.on_train_begin() before the first training step of a custom loop (and "
                "on_train_end() after the last): steps count toward the schedule only in between"
            )
        self._between_steps("begin", self._current_step(), batch)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self._check_live()
        if self._in_step:
            return
        if self._exact:
            self._sync()
            step = self.optimizer.prune_step - 1  # the step that just ran
            if self._step is not None and step < self._step:
                return  # the loss scaler skipped it: nothing was applied, nothing is counted
        else:
            step = self._current_step()
        self._between_steps("end", step)
        self._step = step + 1

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._check_live()
        self.session.on_epoch_end()

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self._check_live()
        self._sync()
        self.optimizer.active = False
        self._in_step = False
        self.session.on_train_end()

    # ---- the hooks: the core's step logic, against a view of the state -------------------------
    def _hooks(self, kind: str, step: int, view: StateView, batch: Optional[int] = None) -> None:
        """Step ``step``'s core logic. ``begin`` (before the update): the score windows, then the pruners whose
        criterion reads weights only — their masks from the weights before the step, a regularizer term for this
        step's gradient. ``end`` (after the update): the pruners with a gradient criterion, now that the step's
        gradients are in their scores; their regularizer term goes to the next step's gradient."""
        pruners = self.session.pruners
        self._view = view
        for p in pruners:
            p.view = view
        try:
            self.session.global_step = step
            if kind == "begin":
                self.session.on_step_begin(step if batch is None else batch)
                self._sync_collect(step)
                for p in self._weight_pruners:
                    p.on_before_optimizer_step()
            else:
                for p in self._grad_pruners:
                    p.on_before_optimizer_step()
                self.session.on_step_end()
        finally:
            self._view = None
            for p in pruners:
                p.view = None

    def _between_steps(self, kind: str, step: int, batch: Optional[int] = None) -> None:
        """The hooks between two steps (steps_per_execution=1, custom loops): variables are read when a pruner
        asks, and what changed is written back. Masks set by ``begin`` zero the weights after the step's update
        (the wrapper does), as torch's ``on_before_optimizer_step`` masks the weights it is about to update;
        masks set by ``end`` zero the updated weights now."""
        def read(variable):
            self._sync()
            return to_numpy(variable)

        view = StateView(read)
        self._hooks(kind, step, view, batch)
        if not view.written:
            return
        self._sync()
        masks = set()
        for key, variable in view.written.items():
            if key not in self._weight_ids:
                variable.assign(view.value(variable))
                masks.add(key)
        if kind == "end":
            for slot in self.optimizer._held.slots:
                if id(slot.mask) in masks:
                    slot.variable.assign(masked(slot.variable, slot.mask))

    def run_in_step(self, kind: str, step: int, reads: Sequence[Any], values: Sequence[Any],
                    writes: Sequence[Any], dtypes: Sequence[str]) -> List[np.ndarray]:
        """The hooks inside a compiled step (a host call, see ``PruningOptimizer._run_hooks``): the view holds the
        step's values of ``reads``; the new values of ``writes`` go back to the graph."""
        if self.optimizer._held.owner is not self:
            raise PruningStateError("a detached pruning callback was called from a training step; call "
                                    "prepare_pruning(model, config) again and train with its callback")
        given = {id(v): np.array(x) for v, x in zip(reads, values)}  # writable copies

        def read(variable):
            return given[id(variable)]

        view = StateView(read)
        self._hooks(kind, step, view)
        return [np.asarray(view.value(v), dtype=d) for v, d in zip(writes, dtypes)]

    def step_table(self, kind: str) -> Optional[np.ndarray]:
        return self._tables.get(kind)

    def _step_table(self, kind: str) -> Optional[np.ndarray]:
        """``table[t]``: whether some pruner acts in step ``t``'s ``kind`` hook (the last entry, False, stands for
        every later step), from the core's own schedule; None when a pruner's step logic is its own (a registered
        class overriding the step hooks), and the hooks then run at every step."""
        pruners = self._weight_pruners if kind == "begin" else self._grad_pruners
        known = (BasePruner.on_before_optimizer_step, ProgressivePruner.on_before_optimizer_step)
        for p in self.session.pruners:
            cls = type(p)
            if (cls.on_step_begin is not BasePruner.on_step_begin or cls.on_step_end is not BasePruner.on_step_end
                    or cls.on_before_optimizer_step not in known):
                return None
        last = max([p.end_step + 1 for p in self.session.pruners]
                   + [p.scheduler.last_pruning_step() for p in self.session.pruners] + [0])
        if last + 2 > MAX_TABLE:
            return None
        table = np.zeros(last + 2, dtype=bool)
        steps = range(last + 1)
        for p in pruners:
            reg = p.reg is not None and p.reg.coeff > 0
            for t in steps:
                if (p.is_pruning_step(t) or (reg and p.in_window(t))
                        or (isinstance(p, ProgressivePruner) and p._stage_step(t) is not None)):
                    table[t] = True
        if kind == "begin":
            for p in self._grad_pruners:  # the score window opens and closes
                for t in (p.start_step, p.end_step + 1):
                    if 0 <= t <= last:
                        table[t] = True
        return table

    # ---- inside the training step --------------------------------------------------------------
    def _fold_gradients(self, grads: Dict[str, Any]) -> None:
        """Called by the optimizer wrapper inside the step, before the update (traced once on TF)."""
        for p in self._grad_pruners:
            for name, w in p.modules.items():
                if grads.get(name) is None:
                    raise PruningStateError(
                        f"layer {name!r} received no gradient in the training step, but pruning_type="
                        f"{p.config['pruning_type']!r} scores weights by their gradients; make sure the loss "
                        f"depends on that layer, or leave it out with excluded_op_names"
                    )
                w.grad = grads[name]
            p.scores.in_step = True
            try:
                p.update_scores()
            finally:
                p.scores.in_step = False
                for w in p.modules.values():
                    w.grad = None

    def _sync_collect(self, step: int) -> None:
        """Gradient scores are folded in only inside each pruner's [start_step, end_step]; outside every window
        the step skips the score computation altogether (the wrapper's ``scoring`` flag, read at run time)."""
        changed = False
        view = self._view  # inside the hooks the flags are the view's (a host call in the step must not sync)
        for i, p in enumerate(self._grad_pruners):
            want = p.in_window(step)
            if self._collecting[i] is not want:
                if view is None:
                    self._sync()
                for w in p.modules.values():
                    if view is not None:
                        view.set(w.slot.collect, np.asarray(want))
                    else:
                        w.slot.collect.assign(want)
                self._collecting[i] = want
                changed = True
        if changed:
            scoring = any(self._collecting)
            if view is not None:
                view.set(self.optimizer._held.scoring, np.asarray(scoring))
            else:
                self.optimizer._held.scoring.assign(scoring)

    def _ensure_installed(self) -> None:
        current = getattr(self.model, "optimizer", None)
        scaled = isinstance(current, keras.optimizers.LossScaleOptimizer)
        inner = current.inner_optimizer if scaled else current
        if self._external or inner is self.optimizer:
            return
        if current is None:
            raise PruningStateError("the model has no optimizer; compile it before training")
        if isinstance(inner, PruningOptimizer):
            raise PruningStateError(
                "the model's optimizer is another PruningOptimizer; prepare_pruning was called again on this model, "
                "so this older callback is stale — use the newest one"
            )
        self.optimizer.replace_inner(inner, self.model.trainable_variables)
        if scaled:
            scaling = keras.optimizers.LossScaleOptimizer(self.optimizer)
            scaling.build(self.model.trainable_variables)
            self.model.optimizer = scaling
        else:
            self.model.optimizer = self.optimizer
        self.model.make_train_function(force=True)
        warnings.warn(
            "model.compile() was called after prepare_pruning(); pruning continues with the new optimizer, but "
            "model.save() will not record the pruning state until prepare_pruning(model, config) is called again "
            "after compile()", stacklevel=3)

    # ---- reporting ---------------------------------------------------------------------------
    def report(self) -> SparsityReport:
        """Zeros of every prunable weight of the model, with each pruned layer's pattern and pruned units and
        why each other one is dense. Shapes are canonical ``(out, in, *kernel)``, as in the torch backend's report.
        """
        return planned_report(self._all_weights, self.optimizer)
