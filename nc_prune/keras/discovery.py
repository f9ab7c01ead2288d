"""Finding the prunable weights of a Keras model, with their names, type names and layouts.

The model is walked layer by layer — ``Sequential``, ``Functional`` and subclassed models alike, nested
models and layers that hold layers (``MultiHeadAttention``) included. A weight's name is the path of
layer names from the model down, joined with ``"/"`` (``"encoder/mha/query"``); a layer with several
prunable weights adds the variable's name (``"sep/depthwise_kernel"``, ``"sep/pointwise_kernel"``).

Built-in layers and what is pruned:

* ``Dense``, ``EinsumDense`` — ``kernel``; type names add ``"Linear"``, so INC's default
  ``pruning_op_types=["Conv", "Linear"]`` selects them. ``MultiHeadAttention`` is pruned through its
  ``EinsumDense`` projections, which also answer to ``"MultiHeadAttention"``.
* ``Conv1D/2D/3D``, ``Conv1D/2D/3DTranspose``, ``DepthwiseConv1D/2D`` — ``kernel``.
* ``SeparableConv1D/2D`` — ``depthwise_kernel`` and ``pointwise_kernel``, as two prunable weights.

A custom layer declares its own weights with ``get_prunable_weights()`` (the name tfmot uses), returning
variables — read with the Keras convention, ``(in, out)`` for 2-D and ``(*k, in, out)`` above — or
``(variable, layout)`` pairs with a layout from :mod:`nc_prune.keras.layout`::

    class Gate(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 16))
        def call(self, x):
            return x @ self.w
        def get_prunable_weights(self):
            return [self.w]          # or [(self.w, "canonical")] for a weight stored (out, in)

Only trainable weights are pruned (a frozen layer's kernel never changes, so there is nothing to keep
at zero); LoRA-enabled and quantized layers are left alone with a warning.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import keras

from ..core.errors import ConfigError, ConfigTypeError, PatternShapeError
from ..core.layers import LayerInfo
from .layout import CONV, CONV_TRANSPOSE, DENSE, DEPTHWISE, EinsumLayout, Layout, default_layout, get_layout

logger = logging.getLogger(__name__)

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_CONV_T = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)


@dataclass(eq=False)
class PrunableWeight:
    """One prunable weight of a model: the handle the Keras glue works on.

    Attributes:
        name: the path used by ``op_names`` and in reports.
        layer: the layer owning the weight.
        variable: the ``keras.Variable``.
        layout: how the native kernel maps to the canonical ``(out, in, *kernel)``.
        type_names: class name first, then aliases matched by ``pruning_op_types``.
        is_linear: a fully connected weight (the classifier head is the last of these).
        slot: the mask / score variables, bound by :class:`~nc_prune.keras.optimizer.PruningOptimizer`.
        grad: the weight's gradient, set only while a training step runs.
    """

    name: str
    layer: Any
    variable: Any
    layout: Layout
    type_names: Tuple[str, ...]
    is_linear: bool = False
    slot: Any = field(default=None, repr=False)
    grad: Any = field(default=None, repr=False)

    @property
    def native_shape(self) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.variable.shape)

    @property
    def shape(self) -> Tuple[int, ...]:
        """Canonical shape ``(out, in, *kernel)``."""
        return self.layout.canonical_shape(self.native_shape)

    def info(self) -> LayerInfo:
        return LayerInfo(self.name, self.type_names, self.shape, self.is_linear)


def _children(layer: Any) -> List[Any]:
    """Direct sub-layers in definition (Functional: topological) order."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    flatten = getattr(layer, "_flatten_layers", None)  # Keras 3 Layer API; no public equivalent for non-models
    return list(flatten(include_self=False, recursive=False)) if flatten is not None else []


def _plain_variable(layer: Any, attr: str) -> Optional[Any]:
    if getattr(layer, "lora_enabled", False):
        warnings.warn(f"layer {layer.name!r} has LoRA enabled; its kernel is not pruned", stacklevel=4)
        return None
    if getattr(layer, "quantization_mode", None):
        warnings.warn(f"layer {layer.name!r} is quantized ({layer.quantization_mode}); it is not pruned",
                      stacklevel=4)
        return None
    v = getattr(layer, attr, None)
    return v if isinstance(v, keras.Variable) else None


def _builtin(layer: Any) -> Optional[List[Tuple[Any, Layout, Tuple[str, ...], bool]]]:
    """``[(variable, layout, extra type names, is_linear)]`` for a built-in prunable layer, else None."""
    if isinstance(layer, L.Dense):
        return [(_plain_variable(layer, "kernel"), DENSE, ("Linear",), True)]
    if isinstance(layer, L.EinsumDense):
        return [(_plain_variable(layer, "kernel"), EinsumLayout.from_equation(layer.equation), ("Linear",), True)]
    if isinstance(layer, _SEPARABLE):
        return [(getattr(layer, "depthwise_kernel", None), DEPTHWISE, (), False),
                (getattr(layer, "pointwise_kernel", None), CONV, (), False)]
    if isinstance(layer, _DEPTHWISE):
        return [(getattr(layer, "kernel", None), DEPTHWISE, (), False)]
    if isinstance(layer, _CONV):
        return [(_plain_variable(layer, "kernel"), CONV, (), False)]
    if isinstance(layer, _CONV_T):
        return [(getattr(layer, "kernel", None), CONV_TRANSPOSE, (), False)]
    return None


def _declared(layer: Any) -> List[Tuple[Any, Layout, Tuple[str, ...], bool]]:
    """Weights a custom layer declares with ``get_prunable_weights()``."""
    try:
        items = layer.get_prunable_weights()
    except Exception as exc:  # noqa: BLE001 - re-raised with the layer named
        raise ConfigError(f"{type(layer).__name__} {layer.name!r}.get_prunable_weights() failed: {exc}") from exc
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise ConfigTypeError(
            f"{type(layer).__name__} {layer.name!r}.get_prunable_weights() must return a list of variables or "
            f"(variable, layout) pairs, got {type(items).__name__}"
        )
    out = []
    for item in items:
        variable, layout = (item if isinstance(item, tuple) and len(item) == 2 else (item, None))
        if not isinstance(variable, keras.Variable):
            raise ConfigTypeError(
                f"{type(layer).__name__} {layer.name!r}.get_prunable_weights() returned {item!r}; each entry must "
                f"be a keras.Variable of the layer or a (variable, layout) pair"
            )
        lay = None if layout is None else get_layout(layout)
        try:
            lay = lay or default_layout(len(variable.shape))
            canonical = lay.canonical_shape(tuple(variable.shape))
        except PatternShapeError as exc:
            raise PatternShapeError(f"{type(layer).__name__} {layer.name!r}, weight {variable.name!r}: {exc}") from None
        alias = ("Linear",) if len(canonical) == 2 else ("Conv",)
        out.append((variable, lay, alias, False))
    return out


def _walk(layer: Any, path: Tuple[str, ...], parents: Tuple[str, ...]) -> Iterator[PrunableWeight]:
    rule = _declared(layer) if callable(getattr(layer, "get_prunable_weights", None)) else _builtin(layer)
    if rule is None:
        inner_parents = parents if isinstance(layer, keras.Model) else parents + (type(layer).__name__,)
        for child in _children(layer):
            yield from _walk(child, path + (child.name,), inner_parents)
        return
    usable = [r for r in rule if r[0] is not None]
    for variable, layout, aliases, is_linear in usable:
        if not variable.trainable:
            logger.info("layer %s: weight %s is not trainable; it is not pruned", "/".join(path), variable.name)
            continue
        name = "/".join(path) if len(usable) == 1 and path else "/".join(path + (variable.name,))
        types = (type(layer).__name__,) + aliases + tuple(p for p in reversed(parents) if p not in aliases)
        yield PrunableWeight(name, layer, variable, layout, types, is_linear)


def find_prunable_weights(model: Any) -> List[PrunableWeight]:
    """Every prunable weight of ``model``, in layer order; a weight shared by two paths appears once.

    >>> import keras
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc"), keras.layers.Dense(2, name="out")])
    >>> [(w.name, w.shape, w.type_names) for w in find_prunable_weights(m)]
    [('fc', (4, 8), ('Dense', 'Linear')), ('out', (2, 4), ('Dense', 'Linear'))]
    """
    if not isinstance(model, keras.layers.Layer):
        raise ConfigTypeError(f"expected a Keras 3 model or layer, got {type(model).__module__}.{type(model).__name__}")
    found: List[PrunableWeight] = []
    seen = set()
    roots: Sequence[Tuple[Any, Tuple[str, ...]]]
    if callable(getattr(model, "get_prunable_weights", None)):
        roots = [(model, ())]
    else:
        roots = [(child, (child.name,)) for child in _children(model)]
    for layer, path in roots:
        for w in _walk(layer, path, ()):
            if id(w.variable) in seen:
                continue
            seen.add(id(w.variable))
            found.append(w)
    return found
