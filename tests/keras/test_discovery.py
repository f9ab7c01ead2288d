"""Finding prunable weights in every kind of Keras model, and INC's selection rules over them."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from nc_prune.core.errors import ConfigError, ConfigTypeError, NoPrunableLayerError, PatternShapeError
from nc_prune.keras import find_prunable_weights
from nc_prune.keras.layout import CANONICAL, CONV, DENSE, DEPTHWISE, EinsumLayout

from .conftest import L, compiled, config, keras, mixed_model, mlp, prepare_pruning


def _table(model):
    return [(w.name, w.shape, w.type_names, w.is_linear) for w in find_prunable_weights(model)]


def test_sequential_names_shapes_and_types():
    assert _table(mlp()) == [
        ("fc1", (32, 16), ("Dense", "Linear"), True),
        ("fc2", (32, 32), ("Dense", "Linear"), True),
        ("head", (4, 32), ("Dense", "Linear"), True),
    ]


def test_mixed_functional_model_with_attention():
    ws = {w.name: w for w in find_prunable_weights(mixed_model())}
    assert list(ws) == ["conv", "dw", "proj", "mha/query", "mha/key", "mha/value", "mha/attention_output", "head"]
    assert ws["conv"].shape == (8, 4, 3, 3) and ws["conv"].layout is CONV
    assert ws["dw"].shape == (16, 1, 3, 3) and ws["dw"].layout is DEPTHWISE
    assert ws["dw"].type_names == ("DepthwiseConv2D",)
    assert ws["mha/query"].shape == (16, 16) and ws["mha/query"].layout == EinsumLayout((1, 2), (0,))
    assert ws["mha/attention_output"].layout == EinsumLayout((2,), (0, 1))
    assert ws["mha/key"].type_names == ("EinsumDense", "Linear", "MultiHeadAttention")


def test_separable_conv_has_two_weights_and_transposed_conv_one():
    m = keras.Sequential([keras.Input((8, 8, 4)), L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep"),
                          L.Conv2DTranspose(4, 3, name="up"), L.Flatten(),
                          L.Dense(2, name="head")])
    assert [(n, s) for n, s, _, _ in _table(m)] == [
        ("sep/depthwise_kernel", (8, 1, 3, 3)), ("sep/pointwise_kernel", (8, 8, 1, 1)), ("up", (4, 8, 3, 3)),
        ("head", (2, 256)),
    ]


class Block(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.inner = keras.Sequential([L.Dense(8, name="a"), L.Dense(8, name="b")], name="stack")
        self.gate = L.Dense(8, name="gate")

    def call(self, x):
        return self.inner(x) * self.gate(x)


class Net(keras.Model):
    def __init__(self):
        super().__init__(name="net")
        self.block = Block(name="block")
        self.out_layer = L.Dense(3, name="out")

    def call(self, x):
        return self.out_layer(self.block(x))


def test_subclassed_model_with_nested_layers_and_models():
    net = Net()
    net(np.zeros((1, 4), "float32"))
    assert [(n, t) for n, _, t, _ in _table(net)] == [
        ("block/stack/a", ("Dense", "Linear", "Block")), ("block/stack/b", ("Dense", "Linear", "Block")),
        ("block/gate", ("Dense", "Linear", "Block")), ("out", ("Dense", "Linear")),
    ]


def test_nested_functional_model_paths_and_shared_layer_once():
    shared = L.Dense(8, name="shared")
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, shared(shared(inner_in)), name="inner")
    inp = keras.Input((8,))
    out = L.Dense(2, name="head")(inner(inp))
    m = keras.Model(inp, out)
    assert [n for n, *_ in _table(m)] == ["inner/shared", "head"]


class Gate(keras.layers.Layer):
    def __init__(self, layout=None, **kw):
        super().__init__(**kw)
        self.layout = layout

    def build(self, shape):
        self.w = self.add_weight(shape=(int(shape[-1]), 8), name="w")
        self.v = self.add_weight(shape=(8,), name="v")

    def call(self, x):
        return x @ self.w + self.v

    def get_prunable_weights(self):
        return [self.w] if self.layout is None else [(self.w, self.layout)]


def test_custom_layer_declares_its_prunable_weights():
    m = keras.Sequential([keras.Input((4,)), Gate(name="g"), Gate(layout="canonical", name="gc"), L.Dense(2, name="head")])
    ws = {w.name: w for w in find_prunable_weights(m)}
    assert ws["g"].layout is DENSE and ws["g"].shape == (8, 4) and ws["g"].type_names == ("Gate", "Linear")
    assert ws["gc"].layout is CANONICAL and ws["gc"].shape == (8, 8)
    assert not ws["g"].is_linear  # declared weights are never taken for the classifier head


@pytest.mark.parametrize("bad,err,match", [
    (lambda self: self.w, ConfigTypeError, "must return a list"),
    (lambda self: ["w"], ConfigTypeError, "each entry must be a keras.Variable"),
    (lambda self: [(self.w, "dens")], ConfigError, "unknown weight layout"),
    (lambda self: [self.v], PatternShapeError, "Bad 'bad', weight 'v': .*at least 2 dimensions"),
])
def test_bad_declarations_name_the_layer(bad, err, match):
    class Bad(Gate):
        get_prunable_weights = bad
    m = keras.Sequential([keras.Input((4,)), Bad(name="bad")])
    with pytest.raises(err, match=match):
        find_prunable_weights(m)


def test_frozen_layers_are_not_candidates_and_lora_layers_warn():
    m = mlp()
    m.get_layer("fc1").trainable = False
    m.get_layer("fc2").enable_lora(2)
    with pytest.warns(UserWarning, match="'fc2' has LoRA enabled"):
        names = [n for n, *_ in _table(m)]
    assert names == ["head"]


# ---- selection rules through prepare_pruning ------------------------------------------------------
def _selected(model, **kw):
    compiled(model)
    cb = prepare_pruning(model, config(target_sparsity=0.5, **kw))
    return sorted(cb.weights)


def test_default_op_types_select_conv_and_linear_and_exclude_the_head():
    assert _selected(mixed_model()) == sorted(["conv", "dw", "proj", "mha/query", "mha/key", "mha/value",
                                               "mha/attention_output"])


def test_op_types_over_class_names_and_aliases():
    assert _selected(mixed_model(), pruning_op_types=["Conv"]) == ["conv", "dw"]
    assert _selected(mixed_model(), pruning_op_types=["MultiHeadAttention"]) == [
        "mha/attention_output", "mha/key", "mha/query", "mha/value"]
    # INC matches by substring: "Dense" is also in "EinsumDense"
    assert _selected(mixed_model(), pruning_op_types=["Dense"]) == [
        "mha/attention_output", "mha/key", "mha/query", "mha/value", "proj"]


def test_op_names_regexes_over_paths_and_exclusions():
    assert _selected(mixed_model(), op_names=["mha/(query|key)$"]) == ["mha/key", "mha/query"]
    assert _selected(mixed_model(), excluded_op_names=["mha/", "^dw$"]) == ["conv", "proj"]
    assert _selected(mixed_model(), op_names=["head"]) == ["head"]  # a full match brings the head back


def test_selection_errors():
    with pytest.raises(NoPrunableLayerError, match=re.escape("selects no layer. Prunable layers of the model: conv")):
        _selected(mixed_model(), op_names=["nothing"])
    with pytest.raises(ConfigTypeError, match="write pruning_op_types=\\['Conv'\\]"):
        _selected(mixed_model(), pruning_op_types="Conv")


def test_layers_that_do_not_fit_the_pattern_stay_dense_with_a_warning():
    m = keras.Sequential([keras.Input((8,)), L.Dense(6, name="odd"), L.Dense(8, name="even"), L.Dense(2, name="head")])
    with pytest.warns(UserWarning, match="'odd'.*does not fit pattern '4x1'"):
        assert _selected(m, pattern="4x1") == ["even"]
