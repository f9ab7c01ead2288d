"""model_slim for Keras: a new model without the dead channels and heads, the same outputs, saved and loaded back.

Units are zeroed directly (each reader's input weights for them) except in the train-time test, where
``channelx1`` pruning during ``model.fit`` zeros them. Parameter counts are every weight (BatchNorm
statistics included), as ``model.count_params()`` counts them.
"""

from __future__ import annotations

import doctest
import importlib
import json

import numpy as np
import pytest

from nc_prune.keras import SlimError, model_slim, slim, strip

from .conftest import L, compiled, config, data, fit, keras, mlp, prepare_pruning


def zero(variable, index, axis):
    """Set the entries ``index`` along ``axis`` of a variable to zero."""
    a = variable.numpy()
    where = [slice(None)] * a.ndim
    where[axis] = list(index)
    a[tuple(where)] = 0
    variable.assign(a)


def randomize_norms(model):
    """BatchNorm statistics and affine weights away from 0 and 1, so a wrong cut shows in the outputs."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            for v, lo, hi in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.5, 0.5), (layer.moving_mean, -0.5, 0.5),
                              (layer.moving_variance, 0.5, 2.0)):
                if v is not None:
                    v.assign(rng.uniform(lo, hi, v.shape).astype("float32"))


def snapshot(model):
    return json.dumps(model.get_config(), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    config_now, weights_now = snapshot(model)
    assert config_now == before[0]
    assert len(weights_now) == len(before[1])
    for a, b in zip(weights_now, before[1]):
        np.testing.assert_array_equal(a, b)


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# ---- the models ------------------------------------------------------------------------------------------
def dense_mlp():
    model = mlp()  # fc1 32 -> fc2 32 -> head 4, input 16
    zero(model.get_layer("fc2").kernel, [1, 4, 7, 10, 13, 16, 19, 22, 25, 28], 0)  # 10 units of fc1
    zero(model.get_layer("head").kernel, [0, 3, 5, 9, 11, 15, 20, 31], 0)         # 8 units of fc2
    return model


def residual_cnn():
    inp = keras.Input((8, 8, 3))
    s = L.ReLU()(L.BatchNormalization(name="bn0")(L.Conv2D(8, 3, padding="same", name="stem")(inp)))
    b = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(s)))
    b = L.BatchNormalization(name="bn2")(L.Conv2D(8, 3, padding="same", name="c2")(b))
    x = L.ReLU()(L.Add(name="add")([s, b]))
    x = L.GlobalAveragePooling2D()(L.Conv2D(6, 1, name="c3")(x))
    model = keras.Model(inp, L.Dense(4, name="head")(x))
    randomize_norms(model)
    zero(model.get_layer("c1").kernel, [1, 5, 6], -2)  # stem + c2 channels, read by c1 and c3 across the add:
    zero(model.get_layer("c3").kernel, [1, 5], -2)     # 1 and 5 are dead for both, 6 only for c1 (it stays)
    zero(model.get_layer("c2").kernel, [0, 3], -2)     # c1's channels 0 and 3
    zero(model.get_layer("head").kernel, [2], 0)       # c3's channel 2, through the global pooling
    return model


def mobilenet_block():
    inp = keras.Input((8, 8, 4))
    x = L.ReLU(6.0)(L.BatchNormalization(name="bn_e")(L.Conv2D(16, 1, use_bias=False, name="expand")(inp)))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.ReLU(6.0)(L.BatchNormalization(name="bn_dw")(x))
    x = L.BatchNormalization(name="bn_p")(L.Conv2D(8, 1, use_bias=False, name="project")(x))
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))
    randomize_norms(model)
    zero(model.get_layer("project").kernel, [0, 2, 4, 6, 8, 10], -2)  # expand, bn_e, dw, bn_dw lose 6 channels
    zero(model.get_layer("head").kernel, [1], 0)                       # project and bn_p lose one
    return model


def conv_flatten_dense():
    inp = keras.Input((4, 4, 2))
    x = L.Flatten()(L.Conv2D(6, 3, padding="same", name="conv")(inp))
    model = keras.Model(inp, L.Dense(3, name="head")(x))
    zero(model.get_layer("head").kernel, [p * 6 + c for p in range(16) for c in (2, 4)], 0)  # channel-last flatten
    return model


def attention():
    inp = keras.Input((6, 8))
    x = L.Dense(16, name="proj")(inp)
    x = x + L.MultiHeadAttention(num_heads=4, key_dim=4, name="mha")(x, x)  # a residual written with +
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(x)))
    zero(model.get_layer("mha").output_dense.kernel, [1, 3], 0)  # (heads, head_dim, out): heads 1 and 3 add nothing
    return model


CASES = {  # build, input shape, removed, [(layer, before, after)], params before, params after
    "dense_mlp": (dense_mlp, (16,), {"channels": 18}, [("fc1", 32, 22), ("fc2", 32, 24)], 1732, 1026),
    "residual_cnn": (residual_cnn, (8, 8, 3), {"channels": 5},
                     [("stem, c2", 8, 6), ("c1", 8, 6), ("c3", 6, 5)], 1570, 959),
    "mobilenet_block": (mobilenet_block, (8, 8, 4), {"channels": 7}, [("expand", 16, 10), ("project", 8, 7)],
                        523, 332),
    "conv_flatten_dense": (conv_flatten_dense, (4, 4, 2), {"channels": 2}, [("conv", 6, 4)], 405, 271),
    "attention": (attention, (6, 8), {"heads": 2}, [("mha", 4, 2)], 1283, 747),
}


@pytest.mark.parametrize("case", list(CASES))
def test_slimmed_model_computes_the_same_has_exactly_the_units_left_and_saves(case, tmp_path):
    build, shape, removed, sizes, before, after = CASES[case]
    model = build()
    x = data(shape, n=8)[0]
    want, kept = outputs(model, x), snapshot(model)
    new, report = model_slim(model)
    assert_unchanged(model, kept)
    assert new is not model and type(new) is type(model)
    assert report.removed == removed
    assert sorted((r.name, r.before, r.after) for r in report.removals) == sorted(sizes)
    assert (report.params_before, report.params_after) == (before, after) == (model.count_params(), new.count_params())
    np.testing.assert_allclose(outputs(new, x), want, atol=1e-5)
    new.save(tmp_path / "x.keras")
    loaded = keras.models.load_model(tmp_path / "x.keras")
    np.testing.assert_allclose(outputs(loaded, x), want, atol=1e-5)
    again, second = model_slim(loaded)  # nothing dead is left
    assert second.removed == {} and again.count_params() == after


def test_sizes_in_the_new_layers():
    new, _ = model_slim(mobilenet_block())
    assert new.get_layer("expand").filters == 10 and new.get_layer("dw").kernel.shape == (3, 3, 10, 1)
    assert new.get_layer("bn_dw").moving_mean.shape == (10,) and new.get_layer("project").kernel.shape == (1, 1, 10, 7)
    new, report = model_slim(attention())
    mha = new.get_layer("mha")
    assert mha.num_heads == 2 and mha.key_dim == 4 and mha.output_dense.kernel.shape == (2, 4, 16)
    assert report.removals[0].removed == [1, 3] and report.removals[0].sizes == {"heads": 2, "key_dim": 4,
                                                                               "value_dim": 4}


def test_train_time_channel_pruning_then_slim_mid_pruning_or_after_strip():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(op_names=["fc2"], pattern="channelx1", target_sparsity=0.5,
                                       pruning_scope="local", start_step=0, end_step=0))
    x, y = data((16,), n=8)
    fit(model, cb, x, y, batch_size=8)
    fc2 = model.get_layer("fc2").kernel
    mask = cb.weights["fc2"].slot.mask.numpy()
    assert int((~mask.all(axis=1)).sum()) == 16  # 16 of fc2's 32 input channels (fc1's units) are pruned
    fc2.assign(np.where(mask, fc2.numpy(), 1.0))  # masked weights drift (as between a step and the next mask)
    kept = snapshot(model)

    mid, report = model_slim(model)  # mid-pruning: the masks are read, the model keeps them
    assert_unchanged(model, kept)
    assert report.removed == {"channels": 16} and (report.params_before, report.params_after) == (1732, 948)
    assert mid.get_layer("fc1").units == 16 and getattr(mid, "optimizer", None) is None  # a plain, uncompiled model
    strip(model)
    np.testing.assert_allclose(outputs(mid, x), outputs(model, x), atol=1e-5)
    after, report2 = model_slim(model)
    assert report2.removed == report.removed and after.count_params() == 948
    np.testing.assert_allclose(outputs(after, x), outputs(model, x), atol=1e-5)


def test_dry_run_reports_what_would_go_and_changes_nothing():
    model = residual_cnn()
    kept = snapshot(model)
    same, dry = model_slim(model, dry_run=True)
    assert same is model
    assert_unchanged(model, kept)
    _, real = slim(model)
    assert dry.removals == real.removals and (dry.params_before, dry.params_after) == (1570, 959)
    assert "5 channels removed; parameters 1,570 -> 959" in str(dry)


def test_nothing_dead_nothing_removed():
    model = mlp()
    x = data((16,), n=4)[0]
    new, report = model_slim(model)
    assert report.removed == {} and report.params_before == report.params_after == model.count_params()
    np.testing.assert_allclose(outputs(new, x), outputs(model, x), atol=1e-6)


# ---- refusals -----------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="nc_prune_tests")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def second_path(second, **producer):
    """Conv ``c`` read by ``r`` (whose input channel 0 is zero) and by ``second(c, input)``."""
    def build():
        inp = keras.Input((6, 6, 4))
        c = L.Conv2D(4, 3, padding="same", name="c", **producer)(inp)
        r = L.Conv2D(4, 1, name="r")(c)
        model = keras.Model(inp, [L.GlobalAveragePooling2D()(r), L.Flatten()(second(c, inp))])
        zero(model.get_layer("r").kernel, [0], -2)
        return model
    return build


def added_to_the_input():
    inp = keras.Input((8,), name="x")
    model = keras.Model(inp, L.Dense(2, name="head")(L.Add(name="res")([inp, L.Dense(8, name="fc")(inp)])))
    zero(model.get_layer("head").kernel, [3], 0)
    zero(model.get_layer("fc").kernel, [3], 0)  # fc reads the input's channel 3, which is the sum's channel 3 too
    return model


def lora_producer():
    inp = keras.Input((5,))
    model = keras.Model(inp, L.Dense(2, name="head")(L.Dense(6, name="fc")(inp)))
    model.get_layer("fc").enable_lora(2)
    zero(model.get_layer("head").kernel, [0], 0)
    return model


INNER = lambda: keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(2, 1)], name="inner")  # noqa: E731
REFUSED = {  # the model, the units the message gives, the layer it names, a phrase of the reason
    "lambda": (second_path(lambda c, _: L.Lambda(lambda t: t * 2.0, name="lam")(c)), "[0] of c", "Lambda 'lam'",
               "cannot see which channels"),
    "custom": (second_path(lambda c, _: Scale(name="scale")(c)), "[0] of c", "Scale 'scale'", "custom layer"),
    "reshape": (second_path(lambda c, _: L.Reshape((36, 4), name="reshape")(c)), "[0] of c", "Reshape 'reshape'",
                "moves channels"),
    "concatenate": (second_path(lambda c, inp: L.Concatenate(name="cat")([c, inp])), "[0] of c",
                    "Concatenate 'cat'", "through a concatenation"),
    "nested_model": (second_path(lambda c, _: INNER()(c)), "[0] of c", "Sequential 'inner'", "nested model"),
    "depth_multiplier": (second_path(lambda c, _: L.DepthwiseConv2D(3, depth_multiplier=2, name="dwm")(c)),
                         "[0] of c", "DepthwiseConv2D 'dwm'", "depth_multiplier=2"),
    "norm_axis": (second_path(lambda c, _: L.BatchNormalization(axis=1, name="bn_ax")(c)), "[0] of c",
                  "BatchNormalization 'bn_ax'", "normalizes axis 1"),
    "broadcast": (second_path(lambda c, inp: L.Multiply(name="mul")([c, L.Conv2D(1, 1, name="gate")(inp)])),
                  "[0] of c", "Multiply 'mul'", "broadcasting"),
    "softmax": (second_path(lambda _, inp: inp, activation="softmax"), "[0] of c", "Conv2D 'c'",
                "'softmax' across its units"),
    "grouped": (second_path(lambda _, inp: inp, groups=2), "[0] of c", "Conv2D 'c'", "grouped convolution"),
    "model_input": (added_to_the_input, "[3] of fc", "model input 'x'", "width is fixed"),
    "lora": (lora_producer, "[0] of fc", "Dense 'fc'", "LoRA"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_layer_and_leave_the_model_as_it_was(case):
    build, units, layer, why = REFUSED[case]
    model = build()
    kept = snapshot(model)
    with pytest.raises(SlimError) as err:
        model_slim(model)
    message = str(err.value)
    assert f"channels {units}" in message and layer in message and why in message, message
    assert "Nothing was changed" in message
    assert_unchanged(model, kept)


def test_heads_of_an_attention_layer_returning_its_scores_are_refused():
    inp = keras.Input((5, 8))
    out, scores = L.MultiHeadAttention(num_heads=2, key_dim=4, name="att")(inp, inp, return_attention_scores=True)
    model = keras.Model(inp, [out, scores])
    zero(model.get_layer("att").output_dense.kernel, [0], 0)
    kept = snapshot(model)
    with pytest.raises(SlimError, match=r"heads \[0\] of MultiHeadAttention 'att'.*attention scores"):
        model_slim(model)
    assert_unchanged(model, kept)


def test_a_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.fc, self.out = L.Dense(4), L.Dense(2)

        def call(self, x):
            return self.out(self.fc(x))

    model = Net()
    model(np.zeros((1, 3), "float32"))
    kept = snapshot(model)
    with pytest.raises(SlimError, match="model 'net' is a subclassed keras.Model.*Functional or Sequential"):
        model_slim(model)
    assert_unchanged(model, kept)
    with pytest.raises(SlimError, match="model 'seq' is not built; give it an Input"):
        model_slim(keras.Sequential([L.Dense(3)], name="seq"))


class Unregistered(keras.layers.Layer):
    """A custom layer Keras cannot find by name when the model is rebuilt from its config."""

    def call(self, x):
        return x + 1.0


def test_a_model_that_cannot_be_rebuilt_from_its_config_is_refused_unchanged():
    inp = keras.Input((5,))
    model = keras.Model(inp, [L.Dense(2, name="head")(L.Dense(6, name="fc")(inp)), Unregistered(name="odd")(inp)])
    zero(model.get_layer("head").kernel, [0], 0)
    kept = snapshot(model)
    with pytest.raises(SlimError, match="could not be rebuilt from its config.*Unregistered.*register_keras_serializable"):
        model_slim(model)
    assert_unchanged(model, kept)
    _, report = model_slim(model, dry_run=True)  # what would go is known without rebuilding
    assert report.removed == {"channels": 1}


@pytest.mark.parametrize("module", ["nc_prune.keras.slim", "nc_prune.core.slimming"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
