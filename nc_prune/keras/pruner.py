"""``KerasBasePruner``: the core's ``BasePruner`` on Keras variables — glue only.

Every decision (scores, schedule, masks, patterns, bounds) is the core's. This class only reads a
weight or its gradient, converts between the kernel's layout and the canonical numpy layout
(:mod:`nc_prune.keras.layout`), and stores masks and scores in the variables of the
:class:`~nc_prune.keras.optimizer.PruningOptimizer`. The session composes it with whichever pruner the
config names (``KerasBasicPruner``, ``KerasProgressivePruner``, ``KerasPatternLockPruner``, or one you
registered), so a new pruner works here without Keras code.

Scores live in variables because gradient criteria are updated inside the compiled training step; the
core's ``update_scores`` runs there unchanged, with ``previous`` being the score variable (zero before
the first step, which the built-in criteria treat like ``None``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import numpy as np
import keras
from keras import ops

from ..core.pruner import BasePruner
from .discovery import PrunableWeight
from .optimizer import masked, value_of


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a Keras variable or backend tensor."""
    if isinstance(value, keras.Variable):
        return np.asarray(value.numpy())
    return np.asarray(ops.convert_to_numpy(value))


class StateView:
    """The wrapper's variables as numpy arrays (native layout) for one run of the pruning hooks.

    The callback's hooks run the core's logic against a view, never against the variables themselves: between
    steps (``steps_per_execution=1``) the view reads each variable when first asked and the callback writes back
    what changed; inside a compiled block of steps (``steps_per_execution > 1``) the view is filled with the step's
    own tensors by a host call (``tf.numpy_function``, ``jax.experimental.io_callback``) and what changed is
    returned to the graph. The same code decides in both cases, so both reach the same state.

    Weights written here (a mask applied to the view) are never written back: the wrapper zeroes the real
    weights itself, after the optimizer's update, so the gradient of the step the masks are computed at is the
    one of the weights before it — the order of torch's ``on_before_optimizer_step``.
    """

    def __init__(self, read: Callable[[Any], Any]) -> None:
        self._read = read
        self._values: Dict[int, np.ndarray] = {}
        self.written: Dict[int, Any] = {}  # id -> variable, in write order

    def get(self, variable: Any) -> np.ndarray:
        key = id(variable)
        if key not in self._values:
            self._values[key] = np.asarray(self._read(variable))
        return self._values[key]

    def set(self, variable: Any, value: Any) -> None:
        self._values[id(variable)] = np.asarray(value)
        self.written[id(variable)] = variable

    def value(self, variable: Any) -> np.ndarray:
        """The value last set or read (the variable's value if never touched)."""
        return self.get(variable)


class ScoreVariables(Mapping):
    """``{layer: score}`` backed by the optimizer's score variables.

    Inside a training step (``in_step``) reading gives the variable, so momentum criteria accumulate in
    the graph, and writing folds the new score in only where the layer's ``collect`` flag is set.
    Outside, a layer reads as missing until at least one step has been folded in — so the core's
    "this criterion needs gradients" error still fires when no gradient ever arrived.
    """

    def __init__(self, modules: Mapping[str, PrunableWeight], touch: Any = None,
                 view: Optional[Callable[[], Optional[StateView]]] = None) -> None:
        self._modules = modules
        self._touch = touch
        self._view = view or (lambda: None)
        self.in_step = False

    def _slot(self, name: str):
        w = self._modules.get(name)
        return None if w is None or w.slot is None or w.slot.score is None else w.slot

    def get(self, name: str, default: Any = None) -> Any:
        slot = self._slot(name)
        if slot is None:
            return default
        if self.in_step:
            return slot.score
        view = self._view()
        if view is not None:
            return view.get(slot.score) if int(view.get(slot.seen)) > 0 else default
        if self._touch is not None:
            self._touch()
        if int(to_numpy(slot.seen)) > 0:
            return slot.score
        return default

    def __getitem__(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        slot = self._slot(name)
        if slot is None:
            raise KeyError(f"layer {name!r} keeps no gradient scores (its pruner's criterion does not need them)")
        collect = value_of(slot.collect)
        slot.score.assign(ops.where(collect, ops.cast(value_of(value), "float32"), value_of(slot.score)))
        slot.seen.assign_add(ops.cast(collect, slot.seen.dtype))

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._modules if self.get(n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class MaskVariables(Mapping):
    """``{layer: mask variable}`` (bool, native layout, True = keep)."""

    def __init__(self, modules: Mapping[str, PrunableWeight]) -> None:
        self._modules = modules

    def __getitem__(self, name: str) -> Any:
        return self._modules[name].slot.mask

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


class KerasBasePruner(BasePruner):
    """Glue between the core's step logic and Keras variables.

    Args:
        config: one resolved group of a ``WeightPruningConfig``.
        modules: ``{name: PrunableWeight}`` whose ``slot`` the optimizer wrapper binds.
    """

    def __init__(self, config, modules) -> None:
        super().__init__(config, modules)
        self.sync: Optional[Callable[[], None]] = None
        self.view: Optional[StateView] = None  # set by the callback while its hooks run (see StateView)
        self.scores = ScoreVariables(self.modules, self._touch, lambda: self.__dict__.get("view"))
        self.masks = MaskVariables(self.modules)

    def _touch(self) -> None:
        """Make the variables current before the host reads or writes them. On JAX, ``model.fit`` keeps the
        training state outside the variables between steps; the callback's ``sync`` puts it back (and the trainer
        reads the variables again before the next step), so it runs only at the steps where a pruner acts. Never
        inside a training step (``scores.in_step``), where the variables are the traced state."""
        sync = self.__dict__.get("sync")
        if sync is not None and not self.scores.in_step:
            sync()

    def _view(self) -> Optional[StateView]:
        return self.__dict__.get("view")

    def _weight(self, name: str) -> Any:
        view = self._view()
        if view is not None:
            return view.get(self.modules[name].variable)
        self._touch()
        return self.modules[name].variable  # a keras.Variable: Python operators work on it on every backend

    def _grad(self, name: str) -> Any:
        return self.modules[name].grad

    def _to_canonical(self, name: str, value: Any) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return self.modules[name].layout.to_canonical(value)
        self._touch()
        return self.modules[name].layout.to_canonical(to_numpy(value))

    def _get_mask(self, name: str) -> np.ndarray:
        w = self.modules[name]
        view = self._view()
        if view is not None:
            return w.layout.to_canonical(view.get(w.slot.mask)).astype(bool, copy=False)
        self._touch()
        return w.layout.to_canonical(to_numpy(w.slot.mask)).astype(bool, copy=False)

    def _set_mask(self, name: str, keep: np.ndarray) -> None:
        w = self.modules[name]
        native = w.layout.from_canonical(np.asarray(keep, dtype=bool), w.native_shape)
        view = self._view()
        if view is not None:
            return view.set(w.slot.mask, np.ascontiguousarray(native))
        self._touch()
        w.slot.mask.assign(native)

    def _missing_grad_hint(self, name: str) -> str:
        return ("no training step has folded its gradient in yet; train with model.fit(..., callbacks=[callback]) or, "
                "in a custom loop, call the callback's hooks around callback.optimizer.apply(...). If the loss does "
                "not depend on the layer, leave it out with excluded_op_names or use pruning_type='magnitude'")

    def _get_state(self, name: str, key: str) -> np.ndarray:
        w = self.modules[name]
        view = self._view()
        if view is not None:
            return w.layout.to_canonical(view.get(w.slot.state[key]))
        self._touch()
        return w.layout.to_canonical(to_numpy(w.slot.state[key]))

    def _set_state(self, name: str, key: str, value: np.ndarray) -> None:
        w = self.modules[name]
        variable = w.slot.state[key]
        native = w.layout.from_canonical(np.asarray(value), w.native_shape).astype(variable.dtype)
        view = self._view()
        if view is not None:
            return view.set(variable, np.ascontiguousarray(native))
        self._touch()
        variable.assign(native)

    def _apply_masks(self) -> None:
        view = self._view()
        if view is not None:  # the view's weights only: the wrapper zeroes the real ones after the update
            for w in self.modules.values():
                weight = view.get(w.variable)
                view.set(w.variable, np.where(view.get(w.slot.mask), weight, np.zeros_like(weight)))
            return
        self._touch()
        for w in self.modules.values():
            w.variable.assign(masked(w.variable, w.slot.mask))

    def _add_to_grad(self, name: str, term: np.ndarray) -> None:
        w = self.modules[name]
        native = w.layout.from_canonical(np.asarray(term), w.native_shape).astype(np.float32)
        view = self._view()
        if view is not None:
            return view.set(w.slot.pending, np.ascontiguousarray(native))
        self._touch()
        w.slot.pending.assign(native)
