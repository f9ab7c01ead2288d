"""Entry points of the Keras backend: ``prepare_pruning``, ``strip`` and ``report``."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Mapping, Optional, Union

import keras

from ..core import records
from ..core.config import WeightPruningConfig
from ..core.errors import ConfigError, ConfigTypeError, PruningStateError, warn_user
from ..core.report import SparsityReport
from ..core.session import PruningSession, as_config
from .callback import PruningCallback
from .discovery import PrunableWeight, find_prunable_weights
from .optimizer import PruningOptimizer
from .pruner import KerasBasePruner
from .report import find_pruning_optimizer, planned_report, saved_plan

logger = logging.getLogger(__name__)

ConfigLike = Union[WeightPruningConfig, Mapping[str, Any]]


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise ConfigTypeError(
            f"prepare_pruning needs a Keras 3 keras.Model, got {type(model).__module__}.{type(model).__name__}"
            + ("; tf_keras (Keras 2) models are not supported — build the model with Keras 3"
               if type(model).__module__.startswith("tf_keras") else "")
        )
    if not model.built or not model.trainable_variables:
        raise PruningStateError(
            f"model {model.name!r} has no weights yet; call it once on a batch (model(x)) so its layers build — "
            f"for a Sequential or Functional model, model.build(input_shape) works too, but a subclassed model "
            f"without a build() method only builds by being called"
        )


def _recompile(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Optional[str]:
    """Compile ``model`` again with ``optimizer`` and its other compile arguments; the reason on failure."""
    if type(model).compile is not keras.Model.compile:
        return f"{type(model).__name__} overrides compile()"
    config = model.get_compile_config()
    if not config:
        return "the model was not compiled with keras.Model.compile"
    try:
        kwargs = keras.saving.deserialize_keras_object(config)
    except Exception as exc:  # noqa: BLE001 - reported to the user
        return f"its compile arguments could not be re-created ({exc})"
    kwargs["optimizer"] = optimizer
    model.compile(**kwargs)
    return None


def _install(model: keras.Model, optimizer: keras.optimizers.Optimizer, what: str) -> None:
    reason = _recompile(model, optimizer)
    if reason is not None:
        model.optimizer = optimizer
        warnings.warn(
            f"could not recompile the model ({reason}); model.optimizer was replaced directly, so {what}",
            stacklevel=3)


def _loss_scaled(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """``optimizer`` wrapped in a LossScaleOptimizer again when the model's optimizer was one."""
    if isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _specs(session: PruningSession) -> List[Dict[str, Any]]:
    out = []
    for p in session.pruners:
        for name, w in p.modules.items():
            out.append({"name": name, "shape": list(w.native_shape), "score": bool(p.needs_grad),
                        "reg": p.reg is not None and p.reg.coeff > 0,
                        "state": {k: list(v) for k, v in sorted(p.LAYER_STATE.items())}})
    return out


def _same_targets(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> bool:
    """Same weights, shapes, and the same score / regularizer slots (so the saved variables fit)."""
    def key(t):
        return (t["name"], tuple(int(s) for s in t["shape"]), bool(t.get("score")), bool(t.get("reg")),
                sorted((k, tuple(v)) for k, v in (t.get("state") or {}).items()))
    return [key(t) for t in a] == [key(t) for t in b]


def prepare_pruning(model: keras.Model, config: Optional[ConfigLike] = None,
                    optimizer: Optional[keras.optimizers.Optimizer] = None, dataloader: Any = None, *,
                    blocks: Optional[str] = None, batch_size: int = 32) -> PruningCallback:
    """Prepare a built Keras 3 model for pruning during training; returns the callback for ``model.fit``.

    With ``dataloader=`` (calibration batches; the torch backend's call) the model is pruned now, one-shot —
    ``magnitude``, ``wanda``, ``sparse_gpt`` — and a :class:`~nc_prune.keras.oneshot.OneShotPruning` is returned
    instead: see :func:`~nc_prune.keras.oneshot.prune_once` (``blocks``, ``batch_size``) and ``docs/keras.md``.

    The model's prunable layers are found (see :mod:`nc_prune.keras.discovery`), each config group gets
    its pruner, and the model's optimizer is wrapped in a :class:`PruningOptimizer` (the model is
    recompiled with it, keeping its loss and metrics) so masks, scores and the step counter live in the
    optimizer's variables and are saved with ``model.save``.

    Args:
        model: a built and compiled ``keras.Model`` (Sequential, Functional or subclassed).
        config: a :class:`WeightPruningConfig` or a dict of its keys. May be omitted when the model was
            loaded mid-pruning: the config saved with it is used.
        optimizer: for a custom training loop, the optimizer you apply gradients with; it is wrapped and
            returned as ``callback.optimizer`` (use that one), and the model is left as it is.

    Returns:
        A :class:`PruningCallback`: pass it to ``model.fit(callbacks=[...])``, or call its methods from
        your own loop.

    Raises:
        ConfigError / ConfigTypeError: the config is invalid.
        NoPrunableLayerError: a config group selects no layer.
        PruningStateError: the model is not built, not compiled (and no ``optimizer`` was given), or was
            loaded with pruning state for a different selection of layers.

    >>> import numpy as np, keras
    >>> from nc_prune import WeightPruningConfig
    >>> from nc_prune.keras import prepare_pruning
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="fc"), keras.layers.Dense(4)])
    >>> model.compile("sgd", "mse")
    >>> cb = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1",
    ...                                                 target_sparsity=0.5, start_step=0, end_step=0))
    >>> _ = model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=1, verbose=0, callbacks=[cb])
    >>> cb.report()["fc"].ratio
    0.5
    """
    if dataloader is not None:
        if optimizer is not None:
            raise ConfigError("pass an optimizer (pruning during training) or a dataloader (one-shot pruning now), "
                              "not both")
        from .oneshot import prune_once
        return prune_once(model, config, dataloader, blocks=blocks, batch_size=batch_size)
    _check_model(model)
    existing = find_pruning_optimizer(getattr(model, "optimizer", None)) if optimizer is None else None
    if config is None:
        if existing is None or existing.pruning_config is None:
            raise ConfigTypeError("prepare_pruning needs a config (WeightPruningConfig or dict)")
        config = WeightPruningConfig.from_dict(existing.pruning_config)
    config = as_config(config)
    found = {w.name: w for w in find_prunable_weights(model)}
    infos = [w.info() for w in found.values()]
    session = PruningSession(config, infos, lambda plan: {layer.name: found[layer.name] for layer in plan},
                             KerasBasePruner)
    session.check_training_time("nc_prune.keras.prepare_pruning (Keras prunes while model.fit trains)")
    specs = _specs(session)
    selected = {t["name"]: found[t["name"]] for t in specs}

    replan: List[str] = []
    if existing is not None and existing.pruning_config is not None:
        differ = records.conflicts(saved_plan(existing, infos)[0], records.session_records(session))
        if differ and not all(g["resume_from_pruned_checkpoint"] for g in config.groups):
            raise records.mismatch_error(list(differ.values()), "this model (saved or prepared under another config)")
        if differ:  # re-plan: finish the old pruning (its zeros stay), start afresh from those zeros
            strip(model)
            existing, replan = None, [n for n in differ if n in selected]
    if existing is not None:
        if not _same_targets(specs, existing.targets):
            raise PruningStateError(
                "the model already carries pruning state for other layers or criteria ("
                + ", ".join(t["name"] for t in existing.targets) + "); the config now selects ("
                + ", ".join(selected) + "). Use the config it was pruned with, or strip(model) to start over"
            )
        wrapper = existing
        wrapper._held.pruning_config = config.to_dict()
        if wrapper._held.owner is not None:
            wrapper._held.owner.detach()
    else:
        inner = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        if isinstance(inner, keras.optimizers.LossScaleOptimizer):
            inner = inner.inner_optimizer  # loss scaling stays outermost (see _loss_scaled)
        if inner is None:
            raise PruningStateError(
                "the model is not compiled; call model.compile(optimizer=..., loss=...) before prepare_pruning, or "
                "pass optimizer=... for a custom training loop"
            )
        wrapper = PruningOptimizer.for_variables(inner, specs, {n: w.variable for n, w in selected.items()},
                                                 config.to_dict())
    wrapper.build(model.trainable_variables)
    for name, w in selected.items():
        w.slot = wrapper.slots[name]
    if existing is None and optimizer is None:
        _install(model, _loss_scaled(model, wrapper), "keras.models.load_model will not restore the pruning state")
    callback = PruningCallback(session, wrapper, selected, model, external_optimizer=optimizer is not None,
                               all_weights=list(found.values()))
    if replan:
        for p in session.pruners:
            for name in set(replan) & set(p.modules):
                p._set_mask(name, p._to_canonical(name, p._weight(name)) != 0)
        warn_user(f"resume_from_pruned_checkpoint=True: re-planning {', '.join(replan)} from the model's zeros; the "
                  f"masks it carried were made under another plan and are dropped")
    return callback


def _parts(target: Union[keras.Model, PruningCallback]):
    if isinstance(target, PruningCallback):
        return target.model, target.optimizer
    if isinstance(target, keras.Model):
        return target, find_pruning_optimizer(getattr(target, "optimizer", None))
    raise ConfigTypeError(f"expected a keras.Model or a PruningCallback, got {type(target).__name__}")


def strip(target: Union[keras.Model, PruningCallback]) -> keras.Model:
    """Finish pruning: zero the masked weights for good and remove every trace of nc_prune from the model.

    The model keeps its layers and weights (with their zeros); its optimizer is unwrapped (the model is
    recompiled with the original optimizer, whose state is kept), and the callback is detached. The
    result saves, loads and exports like any Keras model, without nc_prune installed. Stripping a model
    that is not being pruned returns it unchanged.

    Args:
        target: the model, or the callback ``prepare_pruning`` returned (needed for a custom loop, where
            the model does not hold the wrapper).

    Returns:
        The same model object.
    """
    model, wrapper = _parts(target)
    if wrapper is None:
        logger.info("strip: model %r carries no pruning state", model.name)
        return model
    wrapper.apply_masks()
    owner = wrapper._held.owner
    if owner is not None:
        owner.detach()
    if find_pruning_optimizer(getattr(model, "optimizer", None)) is wrapper:
        _install(model, _loss_scaled(model, wrapper.inner_optimizer),
                 "the saved model's compile config still names PruningOptimizer")
    return model


def sparsity_report(target: Union[keras.Model, PruningCallback]) -> SparsityReport:
    """Zeros of every prunable weight of the model, per layer and total — the torch backend's report.

    Shapes are canonical ``(out, in, *kernel)``, so a Keras model and the torch model with the same
    numbers give the same table. A model being pruned (or loaded mid-pruning) shows each pruned layer's
    pattern and pruned units and why each other one is dense — from the plan its optimizer carries, the
    same table ``callback.report()`` and ``nc-prune report model.keras`` print.

    Args:
        target: the model, or the callback ``prepare_pruning`` returned.
    """
    if isinstance(target, PruningCallback):
        return target.report()
    model, wrapper = _parts(target)
    return planned_report(find_prunable_weights(model), wrapper)
