"""``model_slim`` for Keras 3: a new, smaller model without the pruned channels and heads, with the same outputs.

Keras layers cannot change size in place, so :func:`model_slim` builds a *new* model — the same Sequential
or Functional model, from its config with fewer units — and gives it the kept weights. The model passed in
is never changed. The rule is the torch backend's (:mod:`nc_prune.core.slimming`): a unit goes only when
removing it cannot change the output, so the slimmed model's outputs equal the original's up to float
summation order.

What goes:

* **channels** — a ``Dense`` unit or a ``Conv1D/2D/3D`` filter goes, with its ``BatchNormalization`` entries
  (gamma, beta, moving mean and variance) and ``DepthwiseConv1D/2D`` filter on the way, when every layer
  reading it has zero weights for it: a ``Dense`` or conv its input channel, a ``Dense`` after ``Flatten``
  that channel at every position. Channels added or multiplied together (``Add``, ``Subtract``,
  ``Multiply``, ``Average``, ``Maximum``, ``Minimum``, ``x + y``) are the same channels: one goes only if it
  is dead for the readers of every branch. Element-wise activations, dropout, pooling, padding, cropping
  and upsampling pass channels through. A producer's zero *kernel columns* alone are not enough (its bias,
  its BatchNorm or a residual may still feed the channel): prune the readers' input channels
  (``pattern="channelx1"``) — or the producer's units with ``1xchannel`` and its readers with ``channelx1``.
* **heads** — a head of a ``keras.layers.MultiHeadAttention`` goes when its slice of the output projection
  kernel is zero: the layer is rebuilt with fewer ``num_heads`` (the same ``key_dim`` and ``value_dim``),
  its query, key, value (and gate) kernels and biases and its output kernel cut.

A layer keeps at least one unit (Keras cannot build ``Dense(0)``): when all are dead, one dead unit stays.
Channels something reads at full width — the model's output, ``MultiHeadAttention``'s inputs,
``LayerNormalization``, ``Softmax`` — are alive, and stay without an error.

Refused with :class:`~nc_prune.core.slimming.SlimError` (the layer, what it is, why, what to do), before
anything is built: a subclassed model; dead channels that pass through a layer slim does not understand — a
custom or subclassed layer, ``Lambda``, ``Reshape``, ``Concatenate``, a nested model — or that are added
to a tensor of fixed width (the model input, an attention output), or written by a layer that cannot lose
units (a ``softmax`` activation, a grouped or ``channels_first`` conv); heads of an attention layer that
returns its attention scores.

A model being pruned (:func:`~nc_prune.keras.prepare_pruning`, masks in its ``PruningOptimizer``) is slimmed
as :func:`~nc_prune.keras.strip` would leave it: the masks are read and the masked weights copied as zeros,
so the model needs no ``strip`` first and keeps its pruning state; the new model carries none.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import keras
import numpy as np

from ..core.errors import ConfigTypeError
from ..core.slimming import (ChannelGroups, Removal, SlimError, SlimReport, channel_removal, plan_channels,
                             removable, zero_units)
from .report import find_pruning_optimizer

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_ELEMENTWISE = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D,
                L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Identity)
_SPATIAL = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
            L.AveragePooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.ZeroPadding1D, L.ZeroPadding2D,
            L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D,
            L.UpSampling3D)
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_OP_MERGES = ("Add", "Subtract", "Multiply")  # x + y, x - y, x * y on symbolic tensors (keras.ops)
_READS_WHOLE = (L.MultiHeadAttention, L.LayerNormalization, L.Softmax)
# activations that act on each unit alone (softmax, glu and friends mix a layer's units)
_UNITWISE = frozenset({"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish",
                       "softplus", "softsign", "hard_sigmoid", "hard_silu", "hard_swish", "exponential", "leaky_relu",
                       "mish", "celu", "log_sigmoid", "hard_tanh", "sparse_plus", "soft_shrink", "hard_shrink",
                       "tanh_shrink", "squareplus", "threshold"})

Value = Tuple[int, int]  # (channel group, positions each channel is read at: > 1 after Flatten)


def _what(layer: Any) -> str:
    return f"{type(layer).__name__} {layer.name!r}"


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _activation(layer: Any) -> str:
    act = layer.get_config().get("activation", "linear")
    return act if isinstance(act, str) else str(act.get("config", act) if isinstance(act, dict) else act)


def _unit_problem(layer: Any) -> Optional[str]:
    """Why a Dense / conv / depthwise layer cannot lose units (or read fewer channels), if it cannot."""
    if getattr(layer, "lora_enabled", False):
        return f"{_what(layer)} has LoRA enabled (its kernel is split in two factors); slim the model without LoRA"
    if getattr(layer, "quantization_mode", None):
        return f"{_what(layer)} is quantized ({layer.quantization_mode}); slim the float model, then quantize"
    if not _channels_last(layer):
        return f"{_what(layer)} is channels_first; slim follows channels_last models only"
    if getattr(layer, "groups", 1) != 1:
        return f"{_what(layer)} is a grouped convolution (groups={layer.groups}); use groups=1 or a DepthwiseConv"
    return None


def _not_understood(layer: Any) -> str:
    """Why slim cannot follow channels through ``layer``, with what to do."""
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        return (f"the nested model {_what(layer)} is on their path and slim does not look inside nested models; "
                f"build the model flat")
    if isinstance(layer, L.Lambda):
        return (f"Lambda {layer.name!r} is on their path and slim cannot see which channels its function reads; "
                f"build that part from built-in layers")
    if isinstance(layer, (L.Reshape, L.Permute, L.RepeatVector)):
        return (f"{kind} {layer.name!r} moves channels to other positions (slim follows them through Flatten "
                f"only); put the reshape before the pruned layers, or leave these channels unpruned")
    if isinstance(layer, L.Concatenate):
        return (f"Concatenate {layer.name!r} joins them with other channels and slim does not follow channels "
                f"through a concatenation; add the branches (Add) instead, or leave these channels unpruned")
    if not type(layer).__module__.startswith("keras."):
        return (f"the custom layer {_what(layer)} (from {type(layer).__module__}) is on their path and slim "
                f"cannot see which channels its call() reads; build that part from built-in layers")
    return (f"{kind} {layer.name!r} is on their path and slim does not know how it uses channels; build that part "
            f"from the layers slim follows (see nc_prune.keras.slim)")


def _is_op_merge(op: Any, inputs: List[Any]) -> bool:
    return (type(op).__name__ in _OP_MERGES and type(op).__module__.startswith("keras.src.ops")
            and len(inputs) >= 2)


def _history(tensor: Any) -> Any:
    """The graph node that made a symbolic tensor (Keras records it on the tensor)."""
    op, index, _ = tensor._keras_history
    return op._inbound_nodes[index]


def _nodes(model: Any) -> List[Any]:
    """The model's graph nodes, inputs first (a node after every node it reads)."""
    order, done = [], set()
    stack = [_history(t) for t in model.outputs]
    while stack:
        node = stack[-1]
        if id(node) in done:
            stack.pop()
            continue
        waiting = [p for p in (_history(t) for t in node.input_tensors) if id(p) not in done]
        if waiting:
            stack.extend(waiting)
            continue
        done.add(id(node))
        order.append(node)
        stack.pop()
    return order


class _Graph:
    """The channel groups and the attention layers of a Sequential or Functional model, from its graph."""

    def __init__(self, model: Any) -> None:
        self.groups = ChannelGroups()
        self.layers: Dict[str, Any] = {}
        self.attention: Dict[str, Any] = {}
        self.returns_scores: Set[str] = set()
        self._value: Dict[int, Value] = {}
        self._roles: Dict[Tuple[str, str], Value] = {}
        for node in _nodes(model):
            self._visit(node.operation, list(node.input_tensors), list(node.output_tensors))
        for t in model.outputs:
            self._note(t, "whole", "the model output")

    # ---- bookkeeping ------------------------------------------------------------------------------
    def _get(self, tensor: Any) -> Optional[Value]:
        v = self._value.get(id(tensor))
        return None if v is None else (self.groups.root(v[0]), v[1])

    def _source(self, tensor: Any, why_not: Optional[str] = None) -> int:
        shape = tuple(tensor.shape)
        gid = self.groups.new(shape[-1] if shape and shape[-1] is not None else 0, why_not)
        self._value[id(tensor)] = (gid, 1)
        return gid

    def _note(self, tensor: Any, member: str, item: Any) -> None:
        v = self._get(tensor)
        if v is not None:
            self.groups[v[0]].add(member, item)

    def _role(self, layer: Any, side: str, value: Value) -> Value:
        """The group a layer's inputs (``"in"``) or outputs (``"out"``) belong to: the same at every call."""
        key = (layer.name, side)
        seen = self._roles.setdefault(key, value)
        if seen[1] != value[1]:
            self.groups[value[0]].add("why_not", f"{_what(layer)} is called on tensors of different layouts")
        gid = self.groups.merge(seen[0], value[0])
        self._roles[key] = (gid, value[1])
        return self._roles[key]

    def _spoil(self, inputs: List[Any], outputs: List[Any], reason: str) -> None:
        for t in inputs:
            self._note(t, "why_not", reason)
        for t in outputs:
            self._source(t, reason)

    # ---- one graph node ---------------------------------------------------------------------------
    def _visit(self, layer: Any, inputs: List[Any], outputs: List[Any]) -> None:
        kind = type(layer)
        self.layers[layer.name] = layer
        value = self._get(inputs[0]) if inputs else None
        if isinstance(layer, L.InputLayer):
            for t in outputs:
                self._source(t, f"they are joined (Add, Multiply, ...) with the model input {layer.name!r}, whose "
                                f"width is fixed; join a Dense or conv projection of the input instead")
        elif kind is L.Dense or kind in _CONV:
            self._dense_or_conv(layer, value, outputs[0])
        elif kind in _DEPTHWISE or kind is L.BatchNormalization:
            self._per_channel(layer, value, inputs, outputs)
        elif kind is L.Flatten and _channels_last(layer) and value is not None:
            spatial = tuple(inputs[0].shape)[1:-1]
            if any(s is None for s in spatial):
                self._spoil(inputs, outputs, f"Flatten {layer.name!r} flattens an input of unknown size "
                                             f"{tuple(inputs[0].shape)}; give the model a fixed input shape")
            else:
                self._value[id(outputs[0])] = (value[0], value[1] * math.prod(spatial))
        elif kind in _MERGES or _is_op_merge(layer, inputs):
            self._merge(layer, inputs, outputs)
        elif kind in _READS_WHOLE:
            for t in inputs:
                self._note(t, "whole", _what(layer))
            for t in outputs:
                self._source(t, f"they are joined with the output of {_what(layer)}, whose width slim keeps")
            if kind is L.MultiHeadAttention:
                self.attention[layer.name] = layer
                if len(outputs) > 1:
                    self.returns_scores.add(layer.name)
        elif value is not None and self._passes(layer, value):
            self._value[id(outputs[0])] = value
        else:
            self._spoil(inputs, outputs, _not_understood(layer))

    def _passes(self, layer: Any, value: Value) -> bool:
        """Whether ``layer`` maps channel ``c`` to channel ``c`` alone."""
        kind = type(layer)
        if kind is L.Activation:
            return _activation(layer) in _UNITWISE
        if kind in _ELEMENTWISE:
            return True
        return kind in _SPATIAL and _channels_last(layer) and value[1] == 1

    def _dense_or_conv(self, layer: Any, value: Optional[Value], output: Any) -> None:
        problem = _unit_problem(layer)
        if value is not None:
            group = self.groups[value[0]]
            fan_in = int(layer.kernel.shape[-2])
            if problem:
                group.add("why_not", problem)
            elif fan_in != value[1] * group.channels:
                group.add("why_not", f"{_what(layer)} reads {fan_in} features of {group.channels} channels; "
                                     f"slim follows channels into a layer only whole")
            else:
                gid, positions = self._role(layer, "in", value)
                self.groups[gid].add("readers", (layer.name, positions))
        act = _activation(layer)
        if problem is None and act not in _UNITWISE:
            problem = f"{_what(layer)} applies {act!r} across its units, so removing one would change the others"
        gid = self._source(output, problem)  # a producer that cannot lose units says why in its group
        self.groups[gid].add("producers", layer.name)
        self._value[id(output)] = self._role(layer, "out", (gid, 1))

    def _per_channel(self, layer: Any, value: Optional[Value], inputs: List[Any], outputs: List[Any]) -> None:
        """A depthwise conv (filter ``c`` reads channel ``c``) or BatchNormalization: channel ``c`` stays ``c``."""
        if type(layer) is L.BatchNormalization:
            rank = len(inputs[0].shape)
            problem = None if layer.axis % rank == rank - 1 else (
                f"{_what(layer)} normalizes axis {layer.axis}, not the channels (the last axis)")
            member = "norms"
        else:
            problem = _unit_problem(layer) or (None if layer.depth_multiplier == 1 else (
                f"{_what(layer)} has depth_multiplier={layer.depth_multiplier} (several filters per channel); use 1"))
            member = "depthwise"
        if value is None or value[1] != 1 or problem:
            self._spoil(inputs, outputs, problem or f"{_what(layer)} is applied after Flatten")
            return
        value = self._role(layer, "out", value)
        self.groups[value[0]].add(member, layer.name)
        self._value[id(outputs[0])] = value

    def _merge(self, layer: Any, inputs: List[Any], outputs: List[Any]) -> None:
        values = [self._get(t) for t in inputs]
        shapes = [tuple(t.shape)[1:] for t in inputs]
        if any(v is None for v in values) or len(set(shapes)) > 1 or len({v[1] for v in values}) > 1:
            self._spoil(inputs, outputs, f"{type(layer).__name__} {layer.name!r} combines tensors of shapes {shapes} "
                                         f"(broadcasting mixes channels); make the branches the same shape")
            return
        gid = values[0][0]
        for v in values[1:]:
            gid = self.groups.merge(gid, v[0])
        self._value[id(outputs[0])] = (gid, values[0][1])


# ---- weights -------------------------------------------------------------------------------------------
def _reader(model: Any) -> Callable[[Any], np.ndarray]:
    """The weights as a model being pruned would be stripped: masked entries zero (the model is not changed)."""
    wrapper = find_pruning_optimizer(getattr(model, "optimizer", None))
    masks = {}
    if wrapper is not None and wrapper.built:
        masks = {id(s.variable): np.asarray(s.mask.numpy(), dtype=bool) for s in wrapper.slots.values()}

    def read(variable: Any) -> np.ndarray:
        array = np.asarray(variable.numpy())
        mask = masks.get(id(variable))
        return array if mask is None else np.where(mask, array, np.zeros_like(array))

    return read


def _per_channel_reads(layer: Any, channels: int, positions: int, read: Callable[[Any], np.ndarray]) -> np.ndarray:
    """A Dense or conv reader's weights as ``(channels, ...)``; after Flatten, feature ``p·C + c`` is channel c."""
    kernel = np.moveaxis(read(layer.kernel), -2, 0)  # (in, ...): Dense (in, out), conv (*k, in, out)
    return kernel.reshape(positions, channels, -1).transpose(1, 0, 2)


def _unit_axes(layer: Any) -> Dict[int, Dict[str, int]]:
    """``{id(variable): {"out" | "in" | "heads": axis}}``: where each weight of the layer holds its units."""
    kind = type(layer)
    axes: Dict[int, Dict[str, int]] = {}
    if kind is L.Dense or kind in _CONV or kind in _DEPTHWISE:
        axes[id(layer.kernel)] = {"out": -2} if kind in _DEPTHWISE else {"in": -2, "out": -1}  # (*k, in, out)
        if layer.bias is not None:
            axes[id(layer.bias)] = {"out": 0}
    elif kind is L.BatchNormalization:
        for v in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance):
            if v is not None:
                axes[id(v)] = {"out": 0}
    elif kind is L.MultiHeadAttention:
        projections = [layer.query_dense, layer.key_dense, layer.value_dense]
        if layer.get_config().get("use_gate"):
            projections.append(layer._gate_dense)  # no public accessor
        for sub in projections:  # kernel (dim, heads, head_dim), bias (heads, head_dim)
            axes[id(sub.kernel)] = {"heads": 1}
            if sub.bias is not None:
                axes[id(sub.bias)] = {"heads": 0}
        axes[id(layer.output_dense.kernel)] = {"heads": 0}  # (heads, head_dim, out)
    return axes


def _cut(array: np.ndarray, axes: Dict[str, int], cuts: Dict[str, Tuple[np.ndarray, int, int]]) -> np.ndarray:
    for side, axis in axes.items():
        if side in cuts:
            keep, n, positions = cuts[side]
            index = (np.arange(positions)[:, None] * n + keep[None, :]).reshape(-1)
            array = np.take(array, index, axis=axis)
    return array


# ---- the plan ------------------------------------------------------------------------------------------
def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise ConfigTypeError(f"model_slim needs a keras.Model, got {type(model).__module__}.{type(model).__name__}")
    kind = type(model)
    functional = kind.__name__ == "Functional" and kind.__module__.startswith("keras.")
    if kind is not keras.Sequential and not functional:
        raise SlimError(
            f"model {model.name!r} is a subclassed keras.Model ({kind.__module__}.{kind.__name__}): its call() is "
            f"Python code that slim cannot rebuild with fewer units. Build it as a Functional or Sequential model "
            f"(keras.Model(inputs, outputs)) and slim that")
    try:
        model.outputs
    except (AttributeError, ValueError):
        raise SlimError(f"model {model.name!r} is not built; give it an Input (or call model.build(shape)) "
                        f"first") from None


def _heads_step(layer: Any, scores: bool, read: Callable[[Any], np.ndarray]
                ) -> Optional[Tuple[Removal, np.ndarray]]:
    heads = int(layer.get_config()["num_heads"])
    dead = zero_units(read(layer.output_dense.kernel))
    if not dead.any():
        return None
    if scores:
        raise SlimError(
            f"heads {np.flatnonzero(dead).tolist()} of MultiHeadAttention {layer.name!r} have a zero output "
            f"projection, but the layer returns its attention scores (one map per head), which removing them "
            f"would change. Nothing was changed; call it without return_attention_scores=True, or leave its heads")
    removed, keep = removable(dead, min_keep=1)
    if not removed:
        return None
    config = layer.get_config()
    sizes = {"heads": int(keep.size), "key_dim": int(config["key_dim"]),
             "value_dim": int(config.get("value_dim") or config["key_dim"])}
    return Removal(layer.name, "heads", heads, int(keep.size), removed, sizes), keep


def _plan(graph: _Graph, read: Callable[[Any], np.ndarray]
          ) -> Tuple[List[Removal], Dict[str, Dict[str, Tuple[np.ndarray, int, int]]], Dict[str, Dict[str, int]]]:
    """What goes: the removals, per layer its cuts ``{side: (keep, units before, positions)}``, and the config
    values that change. Raises :class:`SlimError` before anything is built."""
    removals: List[Removal] = []
    cuts: Dict[str, Dict[str, Tuple[np.ndarray, int, int]]] = {}
    changes: Dict[str, Dict[str, int]] = {}
    for group in graph.groups.all():
        reads = {name: _per_channel_reads(graph.layers[name], group.channels, positions, read)
                 for name, positions in group.readers if group.producers and not group.whole}
        planned = plan_channels(group, reads, min_keep=1)
        if planned is None:
            continue
        removed, keep = planned
        for name in group.producers + group.depthwise + group.norms:
            cuts.setdefault(name, {})["out"] = (keep, group.channels, 1)
        for name, positions in group.readers:
            cuts.setdefault(name, {})["in"] = (keep, group.channels, positions)
        for name in group.producers:
            key = "units" if type(graph.layers[name]) is L.Dense else "filters"
            changes.setdefault(name, {})[key] = int(keep.size)
        removals.append(channel_removal(group, removed, keep))
    for name, layer in graph.attention.items():
        step = _heads_step(layer, name in graph.returns_scores, read)
        if step is not None:
            removal, keep = step
            cuts.setdefault(name, {})["heads"] = (keep, removal.before, 1)
            changes.setdefault(name, {})["num_heads"] = int(keep.size)
            removals.append(removal)
    return removals, cuts, changes


def _rebuild(model: Any, changes: Dict[str, Dict[str, int]], resized: Set[str]) -> Any:
    """The model built again from its config with the new sizes (fresh weights, set next); the ``resized``
    layers build from the shapes they are called on, not from the ones their config recorded."""
    config = model.get_config()
    for entry in config["layers"]:
        layer_config = entry.get("config", {})
        name = layer_config.get("name")
        layer_config.update(changes.get(name, {}))
        if name in resized:
            entry.pop("build_config", None)
    try:
        return type(model).from_config(config)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything a layer's from_config raises
        raise SlimError(f"model {model.name!r} could not be rebuilt from its config ({type(exc).__name__}: {exc}); "
                        f"register custom layers with keras.saving.register_keras_serializable so they rebuild. "
                        f"The model was not changed") from exc


def model_slim(model: keras.Model, dry_run: bool = False) -> Tuple[keras.Model, SlimReport]:
    """A new model without the channels and heads whose weights say they do nothing (``slim`` is an alias).

    Channels of Dense / conv layers (with their BatchNorm and depthwise filters, across residual additions)
    go when every layer reading them has zero weights for them; ``MultiHeadAttention`` heads when their slice
    of the output projection is zero. The new model has the same layer names, is not compiled (the
    optimizer's state does not fit the new shapes: compile it before training again), and saves and loads
    with ``model.save`` / ``keras.models.load_model`` like any Keras model. What is supported and refused is
    in :mod:`nc_prune.keras.slim`.

    A model being pruned (prepared with :func:`~nc_prune.keras.prepare_pruning`) need not be stripped first:
    its masks are read from its ``PruningOptimizer`` and the masked weights copied as zeros, so the result
    is the slimmed ``strip(model)``; the model itself keeps its masks and optimizer.

    Args:
        model: a built Sequential or Functional ``keras.Model``. It is not changed.
        dry_run: only report what would be removed; the model itself is returned.

    Returns:
        ``(new_model, report)``: the slimmed model (``model`` itself when ``dry_run`` is set) and a
        :class:`~nc_prune.core.slimming.SlimReport` — the removals, and the parameters (every weight,
        BatchNorm statistics included) before and after.

    Raises:
        SlimError: the model is subclassed or unbuilt, or dead units cannot be removed safely (the message
            names the layer, why and what to do); nothing was built.

    >>> import keras
    >>> from nc_prune.keras import model_slim
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"), keras.layers.Dense(2, name="out")])
    >>> k = m.get_layer("out").kernel
    >>> _ = k.assign(k.numpy() * [[1], [0], [1]])             # unit 1 of fc is read by nothing
    >>> slimmed, report = model_slim(m)
    >>> slimmed.get_layer("fc").units, report.removed, (report.params_before, report.params_after)
    (2, {'channels': 1}, (23, 16))
    """
    _check_model(model)
    read = _reader(model)
    graph = _Graph(model)
    removals, cuts, changes = _plan(graph, read)
    weights = {}
    for layer in model.layers:
        axes = _unit_axes(layer)
        weights[layer.name] = [_cut(read(v), axes.get(id(v), {}), cuts.get(layer.name, {})) for v in layer.weights]
    report = SlimReport(removals, params_before=int(model.count_params()),
                        params_after=int(sum(a.size for arrays in weights.values() for a in arrays)))
    if dry_run:
        return model, report
    new = _rebuild(model, changes, set(cuts))
    for name, arrays in weights.items():
        if arrays:
            new.get_layer(name).set_weights(arrays)
    report.params_after = int(new.count_params())
    return new, report


slim = model_slim
