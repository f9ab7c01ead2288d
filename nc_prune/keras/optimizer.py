"""``PruningOptimizer``: the optimizer wrapper that holds a model's pruning state and does the per-step work.

Keras gives no hook around the optimizer step of ``model.fit`` (gradients never leave the compiled
training step), so nc_prune wraps the model's optimizer the way Keras itself wraps one in
``LossScaleOptimizer``. Inside every training step, in the compiled graph, the wrapper

1. folds the step's gradients into the scores of gradient criteria (the core's criterion, evaluated on
   the weights *before* the update, as on the torch side) — only while a pruner collects;
2. adds a regularizer's term, computed by the core just before the step, to the gradients;
3. lets the wrapped optimizer update the weights (its own constraints, weight decay and EMA included);
4. sets every masked weight back to exactly zero (``where(mask, w, 0)``), and counts the step.

Masks (bool, one byte per weight, True = keep, in the kernel's own layout so applying one is a single
element-wise op), scores, the step counter and the inner optimizer's slots are all variables of the
wrapper. So ``model.save("x.keras")`` writes them and ``keras.models.load_model`` — with
``nc_prune.keras`` imported — restores the wrapper with masks, scores and schedule position intact; the
masks keep being applied even before a new callback is attached. ``strip()`` removes the wrapper.

On JAX the same ``apply`` runs inside Keras's ``stateless_apply``: every state variable above belongs to the
wrapper (its ``variables``), so JAX threads them through the compiled step like the inner optimizer's slots.

The wrapper never decides *what* to prune: mask computation stays in the core, driven by the callback.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import keras
from keras import ops

from ..core.errors import ConfigError, PruningStateError


def run_if(flag: Any, fn: Callable[[], None]) -> None:
    """``fn()`` where the bool variable ``flag`` is True, decided when the step runs — so flipping the flag never
    retraces the compiled step. TensorFlow branches in the graph; the torch backend runs eagerly; on JAX ``fn``
    runs every step (its updates are recorded by the stateless scope and gated by the per-layer ``collect``
    flags, so this costs time only: a ``lax.cond`` cannot hold a stateless scope's assignments)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def then():
            fn()
            return tf.constant(True)

        tf.cond(flag.value, then, lambda: tf.constant(False))
    elif backend == "torch":
        if bool(flag.value):
            fn()
    else:
        fn()


def host_call(fn: Callable[..., Sequence[Any]], args: Sequence[Any], results: Sequence[Any]) -> List[Any]:
    """``fn(*numpy args) -> numpy results`` called on the host from inside a compiled step: ``tf.numpy_function``
    (stateful) on TensorFlow, ``jax.experimental.io_callback(ordered=True)`` on JAX, a direct call on torch (eager).
    ``results`` are ``(shape, dtype)`` pairs."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        out = tf.numpy_function(fn, list(args), [tf.as_dtype(d) for _, d in results], stateful=True)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        for tensor, (shape, _) in zip(out, results):
            tensor.set_shape(shape)
        return out
    if backend == "jax":
        import jax
        from jax.experimental import io_callback

        return list(io_callback(fn, [jax.ShapeDtypeStruct(tuple(s), d) for s, d in results], *args, ordered=True))
    return [ops.convert_to_tensor(x) for x in fn(*[ops.convert_to_numpy(a) for a in args])]


def replicas_in_step() -> int:
    """How many replicas run this step together (``tf.distribute`` on TensorFlow), 1 elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy():
        return 1
    return int(context.num_replicas_in_sync)


def all_reduced(grads: Dict[str, Any]) -> Dict[str, Any]:
    """The gradients summed over the replicas (Keras scales each replica's loss by 1/replicas, so the sum is
    the gradient of the global batch — what the inner optimizer applies); unchanged on one replica."""
    if replicas_in_step() == 1:
        return grads
    import tensorflow as tf

    names = [n for n, g in grads.items() if g is not None]
    reduced = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, [grads[n] for n in names])
    return dict(grads, **dict(zip(names, reduced)))


def counter_dtype() -> str:
    """``int64`` for step counters, or ``int32`` on JAX without ``jax_enable_x64`` (where int64 is truncated
    with a warning at every use)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "int32"
    return "int64"


def value_of(x: Any) -> Any:
    """A variable's current value (inside a stateless scope — JAX's training step — the traced one); anything
    else as it is. JAX's ops take no ``keras.Variable``."""
    return x.value if isinstance(x, keras.Variable) else x


def masked(value: Any, mask: Any) -> Any:
    """``value`` with the entries where ``mask`` is False set to zero (keras.ops; any backend)."""
    value = value_of(value)
    return ops.where(value_of(mask), value, ops.zeros_like(value))


@dataclass(eq=False)
class Slot:
    """The state variables of one pruned weight (all in the weight's native layout)."""

    name: str
    variable: Any
    mask: Any
    score: Any = None      # float32 scores of a gradient criterion
    collect: Any = None    # bool scalar: fold this step's gradient into the score
    seen: Any = None       # int64 scalar: steps folded in so far
    pending: Any = None    # float32 term added to the next gradient (regularizer)
    state: Dict[str, Any] = field(default_factory=dict)  # the pruner's LAYER_STATE variables, by key


@dataclass(eq=False)
class _Held:
    """Plain Python state kept out of Keras/TF attribute tracking (which wraps lists and dicts)."""

    specs: List[Dict[str, Any]]
    pruning_config: Optional[Dict[str, Any]]
    live: Dict[str, Any]
    slots: List[Slot]
    step: Any = None
    active: Any = None    # bool scalar: a pruning callback is driving training (the step counts only then)
    scoring: Any = None   # bool scalar: some gradient pruner collects scores this step
    owner: Any = None     # the PruningCallback driving this wrapper, if any
    hooks: Any = None     # the callback whose hooks run inside the step (steps_per_execution > 1), if any
    traced_hooks: Any = None  # the hooks the current trace of apply() called (None: none)


def _var_name(name: str, suffix: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name) + "_" + suffix


@keras.saving.register_keras_serializable(package="nc_prune")
class PruningOptimizer(keras.optimizers.Optimizer):
    """Wraps ``inner_optimizer``; keeps masked weights at zero and captures gradients for the pruners.

    You rarely build one yourself: :func:`nc_prune.keras.prepare_pruning` wraps ``model.optimizer`` and
    recompiles the model with it. For a custom training loop, use the callback's ``optimizer``.

    Args:
        inner_optimizer: the optimizer doing the updates (an instance, or anything ``keras.optimizers.get``
            accepts).
        targets: one dict per pruned weight — ``name``, ``shape`` (native), ``score`` (keep gradient
            scores), ``reg`` (receives a regularizer term), ``state`` (``{key: [dtype, fill]}``, the pruner's
            ``LAYER_STATE``) and, once built, ``index`` (position in the variables the optimizer was built with).
        pruning_config: the ``WeightPruningConfig.to_dict()`` these targets came from (kept for resuming).
        name: the optimizer's name.

    Attributes:
        slots: ``{target name: Slot}`` once built.
        scoring: whether the step folds gradients into scores (a bool variable the callback sets while a
            gradient pruner is inside its window; the step checks it at run time, so switching scores off
            after the window costs no retrace and leaves only the mask work).
    """

    def __init__(self, inner_optimizer: Any, targets: Sequence[Mapping[str, Any]],
                 pruning_config: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(
                f"PruningOptimizer does not take {sorted(kwargs)}; set them on the inner optimizer"
            )
        super().__init__(learning_rate=0.0, name=name or "pruning_optimizer")
        self.inner_optimizer = keras.optimizers.get(inner_optimizer)
        if isinstance(self.inner_optimizer, PruningOptimizer):
            raise ConfigError("PruningOptimizer cannot wrap another PruningOptimizer; strip() the model first")
        specs = [dict(t, shape=[int(s) for s in t["shape"]]) for t in targets]
        names = [t["name"] for t in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"PruningOptimizer targets must have distinct names, got {names}")
        cfg = copy.deepcopy(dict(pruning_config)) if pruning_config is not None else None
        self._held = _Held(specs, cfg, {}, [])
        self._score_hook: Optional[Callable[[Dict[str, Any]], None]] = None
        self._traced_scores: Optional[bool] = None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_variables(cls, inner_optimizer: Any, targets: Sequence[Mapping[str, Any]], variables: Mapping[str, Any],
                      pruning_config: Optional[Mapping[str, Any]] = None) -> "PruningOptimizer":
        """A wrapper whose targets are given as live variables (``{name: keras.Variable}``)."""
        opt = cls(inner_optimizer, targets, pruning_config)
        opt._held.live = dict(variables)
        return opt

    def _resolve(self, spec: Dict[str, Any], var_list: Sequence[Any]) -> Any:
        keys = [self._var_key(v) for v in var_list]
        live = self._held.live.get(spec["name"])
        if live is not None:
            try:
                spec["index"] = keys.index(self._var_key(live))
            except ValueError:
                raise PruningStateError(
                    f"weight {spec['name']!r} ({live.path}) is not among the variables the optimizer updates; "
                    f"is the layer frozen (trainable=False)? Exclude it with excluded_op_names"
                ) from None
            return live
        index = spec.get("index")
        if index is None or not 0 <= index < len(var_list):
            raise PruningStateError(
                f"saved pruning state for {spec['name']!r} points at trainable variable #{index}, but the model "
                f"has {len(var_list)}; load it into the model it was saved from"
            )
        variable = var_list[index]
        if [int(s) for s in variable.shape] != spec["shape"]:
            raise PruningStateError(
                f"saved pruning state for {spec['name']!r} expects shape {tuple(spec['shape'])} at trainable "
                f"variable #{index}, but the model has {variable.path} with shape {tuple(variable.shape)}; the "
                f"model's structure changed since it was saved"
            )
        return variable

    def _state_variable(self, shape: Any, aggregation: str = "only_first_replica", **kwargs: Any) -> Any:
        """A variable of the pruning state. Under ``tf.distribute`` every replica holds the same value — masks,
        flags and states are written by the host (to every replica), the step and the regularizer term in the
        step, scores from all-reduced gradients — so none is averaged: ``only_first_replica``, as Keras's own
        ``iterations``; scores and their counts, written inside a run-time branch where a cross-replica write
        cannot go, are ``none`` (each replica writes its own copy, the same value)."""
        return self.add_variable(shape, aggregation=aggregation, **kwargs)

    def build(self, var_list: Sequence[Any]) -> None:
        if self.built:
            return
        var_list = list(var_list)
        slots = []
        step = self._state_variable((), initializer="zeros", dtype=counter_dtype(), name="prune_step")
        active = self._state_variable((), initializer="zeros", dtype="bool", name="prune_active")
        scoring = None
        if any(spec.get("score") for spec in self._held.specs):
            scoring = self._state_variable((), initializer="zeros", dtype="bool", name="prune_scoring")
        for spec in self._held.specs:
            variable = self._resolve(spec, var_list)
            shape = tuple(spec["shape"])
            slot = Slot(spec["name"], variable,
                        self._state_variable(shape, initializer="ones", dtype="bool", name=_var_name(spec["name"], "mask")))
            if spec.get("score"):
                slot.score = self._state_variable(shape, aggregation="none", initializer="zeros", dtype="float32",
                                               name=_var_name(spec["name"], "score"))
                slot.collect = self._state_variable((), initializer="zeros", dtype="bool",
                                                 name=_var_name(spec["name"], "collect"))
                slot.seen = self._state_variable((), aggregation="none", initializer="zeros", dtype=counter_dtype(),
                                              name=_var_name(spec["name"], "seen"))
            if spec.get("reg"):
                slot.pending = self._state_variable(shape, initializer="zeros", dtype="float32",
                                                 name=_var_name(spec["name"], "pending"))
            for key, (dtype, fill) in sorted((spec.get("state") or {}).items()):
                slot.state[key] = self._state_variable(shape, initializer=keras.initializers.Constant(fill),
                                                    dtype=dtype, name=_var_name(spec["name"], f"state_{key}"))
            slots.append(slot)
        self._held.step = step
        self._held.active = active
        self._held.scoring = scoring
        self._held.slots = slots
        self._held.live = {}
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    # ---- state -------------------------------------------------------------------------------
    @property
    def slots(self) -> Dict[str, Slot]:
        return {s.name: s for s in self._held.slots}

    @property
    def targets(self) -> List[Dict[str, Any]]:
        return copy.deepcopy(self._held.specs)

    @property
    def pruning_config(self) -> Optional[Dict[str, Any]]:
        return copy.deepcopy(self._held.pruning_config)

    @property
    def prune_step(self) -> int:
        """Optimizer steps taken since pruning was prepared."""
        self._require_built()
        return int(self._held.step.numpy())

    @prune_step.setter
    def prune_step(self, value: int) -> None:
        self._require_built()
        self._held.step.assign(int(value))

    @property
    def active(self) -> bool:
        """Whether a pruning callback drives training now. Steps taken while it does not (a warm-up
        ``fit`` without the callback) keep masked weights at zero but do not move the schedule."""
        self._require_built()
        return bool(self._held.active.numpy())

    @active.setter
    def active(self, value: bool) -> None:
        self._require_built()
        self._held.active.assign(bool(value))

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        if self._held.active is not None:  # saved inside a fit (ModelCheckpoint): no callback drives it now
            self._held.active.assign(False)

    def _require_built(self) -> None:
        if not self.built:
            raise PruningStateError("PruningOptimizer is not built yet; call build(model.trainable_variables)")

    def replace_inner(self, inner_optimizer: Any, var_list: Sequence[Any]) -> None:
        """Wrap a different optimizer (after the model was recompiled); masks and scores are kept."""
        inner = keras.optimizers.get(inner_optimizer)
        if isinstance(inner, PruningOptimizer):
            raise ConfigError("PruningOptimizer cannot wrap another PruningOptimizer; strip() the model first")
        if not inner.built:
            inner.build(list(var_list))
        self.inner_optimizer = inner

    def apply_masks(self) -> None:
        """Zero every masked weight now (outside a training step)."""
        for s in self._held.slots:
            s.variable.assign(masked(s.variable, s.mask))

    # ---- the training step -------------------------------------------------------------------
    def apply(self, grads: Sequence[Any], trainable_variables: Optional[Sequence[Any]] = None) -> None:
        if not self.built:
            if trainable_variables is None:
                raise PruningStateError("PruningOptimizer.apply needs trainable_variables on its first call")
            self.build(trainable_variables)
        grads = list(grads)
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        position = {self._var_key(v): i for i, v in enumerate(variables)}
        index = {s.name: position.get(self._var_key(s.variable)) for s in self._held.slots}
        hooks = self._held.hooks
        self._held.traced_hooks = hooks
        if hooks is not None:
            self._run_hooks(hooks, "begin")
        if self._score_hook is not None and self._held.scoring is not None:
            by_name = all_reduced({n: (grads[i] if i is not None else None) for n, i in index.items()})
            run_if(self._held.scoring, lambda: self._score_hook(by_name))
        self._traced_scores = self._score_hook is not None
        replicas = replicas_in_step()
        for s in self._held.slots:
            i = index[s.name]
            if s.pending is not None and i is not None and grads[i] is not None:
                term = ops.cast(value_of(s.pending), grads[i].dtype)
                if replicas > 1:  # the inner optimizer sums the replicas' gradients: add 1/replicas on each
                    term = ops.multiply(term, ops.cast(1.0 / replicas, term.dtype))
                grads[i] = ops.add(grads[i], term)
                s.pending.assign(ops.zeros_like(value_of(s.pending)))
        self.inner_optimizer.apply(grads, trainable_variables)
        self.apply_masks()
        if hooks is not None:
            self._run_hooks(hooks, "end")
        self._held.step.assign_add(ops.cast(value_of(self._held.active), self._held.step.dtype))

    # ---- the callback's hooks inside the step (steps_per_execution > 1) -----------------------
    def _hook_variables(self):
        """What a host call reads (every state variable and the weights) and what it may change."""
        reads, writes = [], []
        for s in self._held.slots:
            reads += [s.variable, s.mask]
            writes.append(s.mask)
            if s.score is not None:
                reads += [s.score, s.seen, s.collect]
                writes.append(s.collect)
            if s.pending is not None:
                reads.append(s.pending)
                writes.append(s.pending)
            for key in sorted(s.state):
                reads.append(s.state[key])
                writes.append(s.state[key])
        if self._held.scoring is not None:
            reads.append(self._held.scoring)
            writes.append(self._held.scoring)
        return reads, writes

    def _run_hooks(self, hooks: Any, kind: str) -> None:
        """Step ``t``'s ``kind`` hook ("begin": weight criteria and score windows, before the update; "end":
        gradient criteria, after it) as a host call inside the compiled step, at the steps where the schedule
        makes a pruner act (``hooks.step_table(kind)``, baked into the trace) — with the step's own values, so
        the state is the one ``steps_per_execution=1`` reaches between steps."""
        reads, writes = self._hook_variables()
        step = value_of(self._held.step)
        table = hooks.step_table(kind)
        pred = value_of(self._held.active)
        if table is not None:
            index = ops.cast(ops.minimum(step, len(table) - 1), "int32")
            pred = ops.logical_and(pred, ops.take(ops.convert_to_tensor(table), index))
        specs = [(tuple(int(d) for d in v.shape), keras.backend.standardize_dtype(v.dtype)) for v in writes]

        def host(t, *values):
            return hooks.run_in_step(kind, int(t), reads, values, writes, [d for _, d in specs])

        def call():
            return host_call(host, [step] + [value_of(v) for v in reads], specs)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            def then():
                for v, x in zip(writes, call()):
                    v.assign(x)
                if kind == "end":
                    self.apply_masks()
                return tf.constant(True)

            tf.cond(pred, then, lambda: tf.constant(False))
            return
        new = ops.cond(pred, call, lambda: [value_of(v) for v in writes])
        for v, x in zip(writes, new):
            v.assign(x)
        if kind == "end":
            self.apply_masks()

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)
        self.apply_masks()  # an EMA overwrite must not bring pruned weights back

    def scale_loss(self, loss: Any) -> Any:
        return self.inner_optimizer.scale_loss(loss)

    # ---- delegation --------------------------------------------------------------------------
    @property
    def variables(self) -> List[Any]:
        return self._variables[:] + self.inner_optimizer.variables

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    # ---- serialization -----------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "targets": self.targets,
            "pruning_config": self.pruning_config,
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "PruningOptimizer":
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)
