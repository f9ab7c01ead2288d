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

from typing import Any, Callable, Iterator, Mapping, Optional

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


class ScoreVariables(Mapping):
    """``{layer: score}`` backed by the optimizer's score variables.

    Inside a training step (``in_step``) reading gives the variable, so momentum criteria accumulate in
    the graph, and writing folds the new score in only where the layer's ``collect`` flag is set.
    Outside, a layer reads as missing until at least one step has been folded in — so the core's
    "this criterion needs gradients" error still fires when no gradient ever arrived.
    """

    def __init__(self, modules: Mapping[str, PrunableWeight], touch: Any = None) -> None:
        self._modules = modules
        self._touch = touch
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
        self.scores = ScoreVariables(self.modules, self._touch)
        self.masks = MaskVariables(self.modules)

    def _touch(self) -> None:
        """Make the variables current before the host reads or writes them. On JAX, ``model.fit`` keeps the
        training state outside the variables between steps; the callback's ``sync`` puts it back (and the trainer
        reads the variables again before the next step), so it runs only at the steps where a pruner acts. Never
        inside a training step (``scores.in_step``), where the variables are the traced state."""
        sync = self.__dict__.get("sync")
        if sync is not None and not self.scores.in_step:
            sync()

    def _weight(self, name: str) -> Any:
        self._touch()
        return self.modules[name].variable  # a keras.Variable: Python operators work on it on every backend

    def _grad(self, name: str) -> Any:
        return self.modules[name].grad

    def _to_canonical(self, name: str, value: Any) -> np.ndarray:
        self._touch()
        return self.modules[name].layout.to_canonical(to_numpy(value))

    def _get_mask(self, name: str) -> np.ndarray:
        self._touch()
        w = self.modules[name]
        return w.layout.to_canonical(to_numpy(w.slot.mask)).astype(bool, copy=False)

    def _set_mask(self, name: str, keep: np.ndarray) -> None:
        self._touch()
        w = self.modules[name]
        w.slot.mask.assign(w.layout.from_canonical(np.asarray(keep, dtype=bool), w.native_shape))

    def _missing_grad_hint(self, name: str) -> str:
        return ("no training step has folded its gradient in yet; train with model.fit(..., callbacks=[callback]) or, "
                "in a custom loop, call the callback's hooks around callback.optimizer.apply(...). If the loss does "
                "not depend on the layer, leave it out with excluded_op_names or use pruning_type='magnitude'")

    def _get_state(self, name: str, key: str) -> np.ndarray:
        self._touch()
        w = self.modules[name]
        return w.layout.to_canonical(to_numpy(w.slot.state[key]))

    def _set_state(self, name: str, key: str, value: np.ndarray) -> None:
        self._touch()
        w = self.modules[name]
        variable = w.slot.state[key]
        variable.assign(w.layout.from_canonical(np.asarray(value), w.native_shape).astype(variable.dtype))

    def _apply_masks(self) -> None:
        self._touch()
        for w in self.modules.values():
            w.variable.assign(masked(w.variable, w.slot.mask))

    def _add_to_grad(self, name: str, term: np.ndarray) -> None:
        self._touch()
        w = self.modules[name]
        w.slot.pending.assign(w.layout.from_canonical(np.asarray(term), w.native_shape).astype(np.float32))
