"""``PruningSession``: every pruner group of a config, driven through INC's callbacks.

Backends give the session a list of :class:`~nc_prune.core.layers.LayerInfo` and a *glue* class (a
``BasePruner`` subclass that only implements the framework methods). The session picks each group's
pruner class from the registry and mixes the glue in, so a pruner registered by a user with
``@register_pruner`` runs on every backend without a line of framework code.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

from .config import WeightPruningConfig
from .errors import ConfigError, ConfigTypeError
from .layers import LayerInfo, LayerPlan, plan_layers
from .pruner import BasePruner, StepCounter, get_pruner_class

_COMPOSED: Dict[tuple, type] = {}


def compose_pruner_class(glue: Type[BasePruner], pruner: Type[BasePruner]) -> type:
    """``class <Glue><Pruner>(glue, pruner)``, cached. The glue must define framework methods only."""
    if issubclass(pruner, glue):
        return pruner
    key = (glue, pruner)
    if key not in _COMPOSED:
        prefix = glue.__name__.replace("BasePruner", "")
        _COMPOSED[key] = type(f"{prefix}{pruner.__name__}", (glue, pruner), {"__module__": glue.__module__})
    return _COMPOSED[key]


def as_config(config: Union[WeightPruningConfig, Mapping[str, Any]]) -> WeightPruningConfig:
    if isinstance(config, WeightPruningConfig):
        return config
    if isinstance(config, Mapping):
        return WeightPruningConfig.from_dict(config)
    raise ConfigTypeError(
        f"config must be a WeightPruningConfig or a dict of its keys, got {type(config).__name__}"
    )


def refuse_one_shot_only(groups: Sequence[Mapping[str, Any]], how: str) -> None:
    """Refuse the groups whose pruner is one-shot only (:attr:`BasePruner.one_shot_only`) for training-time use.

    ``how`` says what the user did (``"prepare_pruning(..., optimizer=...)"``); without this check such
    a group would never prune and training would carry on dense without a word.
    """
    bad = [(i, g["pruning_type"]) for i, g in enumerate(groups) if get_pruner_class(g).one_shot_only]
    if bad:
        names = ", ".join(f"group {i} (pruning_type={t!r})" for i, t in bad)
        raise ConfigError(
            f"{names} prunes a trained model at once from calibration data and cannot prune during training, "
            f"as {how} asks; prune one-shot with prepare_pruning(model, config, "
            f"dataloader=calibration_batches), or pick a training-time pruning_type (e.g. 'snip_momentum')"
        )


class PruningSession:
    """Builds one pruner per group and forwards the callbacks to each.

    Attributes:
        layer_plan: the :class:`~nc_prune.core.layers.LayerPlan` — each group's layers, and why the others stay
            dense.

    Args:
        config: a :class:`WeightPruningConfig` (or a dict for ``WeightPruningConfig.from_dict``).
        layers: the model's prunable weights as the backend sees them.
        make_modules: ``[LayerInfo] -> {name: handle}`` for a group's pruner.
        glue: the backend's ``BasePruner`` subclass implementing the framework methods.
        couplings: units spanning layers the backend found (heads, FFN channels), or a function of a group
            config giving them; see :func:`~nc_prune.core.layers.plan_layers`.
        step_counter: where the step is kept (default: in memory). The session and every pruner read this one
            counter; only :meth:`on_step_end` (and the :attr:`global_step` setter) change it.
    """

    def __init__(self, config, layers: Sequence[LayerInfo],
                 make_modules: Callable[[List[LayerInfo]], Dict[str, Any]], glue: Type[BasePruner],
                 couplings: Any = (), step_counter: Optional[StepCounter] = None) -> None:
        self.step_counter: StepCounter = StepCounter() if step_counter is None else step_counter
        self.config = as_config(config)
        groups = self.config.groups
        self.layer_plan: LayerPlan = plan_layers(layers, groups, couplings)
        self.pruners: List[BasePruner] = []
        for group, plan, coupled in zip(groups, self.layer_plan.groups, self.layer_plan.couplings):
            cls = compose_pruner_class(glue, get_pruner_class(group))
            pruner = cls(group, make_modules(plan))
            pruner.couplings = list(coupled)
            pruner.pattern.couple(coupled)
            pruner.share_step(self.step_counter)
            self.pruners.append(pruner)

    # ---- the step counter: one, shared by the pruners ---------------------------------------
    @property
    def global_step(self) -> int:
        return self.step_counter.get()

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.step_counter.set(value)

    @property
    def needs_grad(self) -> bool:
        return any(p.needs_grad for p in self.pruners)

    def is_done(self) -> bool:
        step = self.global_step
        return all(p.is_done(step) for p in self.pruners)

    def check_training_time(self, how: str) -> None:
        """Refuse one-shot-only groups for pruning that follows training (see :func:`refuse_one_shot_only`)."""
        refuse_one_shot_only([p.config for p in self.pruners], how)

    def layer_patterns(self) -> Dict[str, str]:
        return {name: p.config["pattern"] for p in self.pruners for name in p.modules}

    # ---- callbacks ---------------------------------------------------------------------------
    def on_train_begin(self, dataloader: Any = None) -> None:
        for p in self.pruners:
            p.on_train_begin(dataloader)

    def on_epoch_begin(self, epoch: int) -> None:
        for p in self.pruners:
            p.on_epoch_begin(epoch)

    def on_step_begin(self, local_step: Optional[int] = None) -> None:
        for p in self.pruners:
            p.on_step_begin(local_step)

    def on_before_optimizer_step(self) -> None:
        for p in self.pruners:
            p.on_before_optimizer_step()

    def on_after_optimizer_step(self) -> None:
        for p in self.pruners:
            p.on_after_optimizer_step()

    def on_step_end(self) -> None:
        for p in self.pruners:
            p.on_step_end()
        self.step_counter.set(self.step_counter.get() + 1)

    def on_epoch_end(self) -> None:
        for p in self.pruners:
            p.on_epoch_end()

    def on_train_end(self) -> None:
        for p in self.pruners:
            p.on_train_end()
