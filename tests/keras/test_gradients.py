"""Gradient criteria inside model.fit: the scores are exactly the core's criterion on the step's gradients
and the weights before the update, folded in only inside the pruning window; regularizer terms reach the
update. References are computed by hand with tf.GradientTape on the same batches."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nc_prune import WeightPruningConfig, compute_masks
from nc_prune.core.errors import PruningStateError
from nc_prune.core.patterns.base import get_pattern
from nc_prune.core.regularizers import GroupLasso

from .conftest import L, canonical_mask, compiled, config, data, keras, mlp, prepare_pruning

NAMES = ("fc1", "fc2")


def _grads(model, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    g = tape.gradient(loss, [model.get_layer(n).kernel for n in NAMES])
    return dict(zip(NAMES, (v.numpy() for v in g)))


def _kernels(model):
    return {n: model.get_layer(n).kernel.numpy() for n in NAMES}


def _canon(cb, d):
    return {n: cb.weights[n].layout.to_canonical(v) for n, v in d.items()}


def _score(cb, n):
    return cb.weights[n].slot.score.numpy()


def _frozen_sgd():
    return keras.optimizers.SGD(learning_rate=0.0)  # weights move only by pruning


def test_snip_one_shot_scores_and_masks_are_the_products_of_weights_and_gradients():
    model = compiled(mlp(), _frozen_sgd())
    cb = prepare_pruning(model, config(pruning_type="snip", pattern="4x1", target_sparsity=0.5, start_step=0,
                                       end_step=0))
    x, y = data((16,), n=8)
    w0, g0 = _kernels(model), _grads(model, x, y)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    want = {n: np.abs(w0[n] * g0[n]) for n in NAMES}
    for n in NAMES:
        np.testing.assert_allclose(_score(cb, n), want[n], rtol=1e-5, atol=1e-9)
    masks = compute_masks(_canon(cb, want), "4x1", 0.5)
    for n in NAMES:
        np.testing.assert_array_equal(canonical_mask(cb, n), masks[n])


def test_snip_momentum_accumulates_every_step_on_the_pre_update_weights():
    model = compiled(mlp(), _frozen_sgd())
    cfg = config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, start_step=0, end_step=2,
                 pruning_frequency=2, sparsity_decay_type="linear")
    cb = prepare_pruning(model, cfg)
    x, y = data((16,), n=24)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)]
    w0 = _kernels(model)
    s0 = {n: np.abs(w0[n] * g) for n, g in _grads(model, *batches[0]).items()}
    mask0 = compute_masks(_canon(cb, s0), "4x1", 0.25)  # step 0 of a 2-step linear schedule
    w1 = {n: w0[n] * cb.weights[n].layout.from_canonical(mask0[n], w0[n].shape) for n in NAMES}
    for n in NAMES:
        model.get_layer(n).kernel.assign(w1[n])
    s1 = {n: np.abs(w1[n] * g) for n, g in _grads(model, *batches[1]).items()}
    s2 = {n: np.abs(w1[n] * g) for n, g in _grads(model, *batches[2]).items()}
    for n in NAMES:
        model.get_layer(n).kernel.assign(w0[n])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    want = {n: 0.81 * s0[n] + 0.9 * s1[n] + s2[n] for n in NAMES}
    for n in NAMES:
        np.testing.assert_allclose(_score(cb, n), want[n], rtol=1e-4, atol=1e-8)
        assert int(cb.weights[n].slot.seen.numpy()) == 3
    masks = compute_masks(_canon(cb, want), "4x1", 0.5, pre_masks=mask0)
    for n in NAMES:
        np.testing.assert_array_equal(canonical_mask(cb, n), masks[n])


def test_gradient_criterion_uses_the_latest_gradient_only():
    model = compiled(mlp(), _frozen_sgd())
    cb = prepare_pruning(model, config(pruning_type="gradient", pattern="1x1", target_sparsity=0.5, start_step=1,
                                       end_step=1))
    x, y = data((16,), n=16)
    g1 = _grads(model, x[8:], y[8:])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    for n in NAMES:
        np.testing.assert_allclose(_score(cb, n), np.abs(g1[n]), rtol=1e-5, atol=1e-9)
    masks = compute_masks(_canon(cb, {n: np.abs(g1[n]) for n in NAMES}), "1x1", 0.5)
    for n in NAMES:
        np.testing.assert_array_equal(canonical_mask(cb, n), masks[n])


def test_scores_are_folded_in_only_inside_the_window_and_skipped_after_it_without_a_retrace():
    model = compiled(mlp(), keras.optimizers.SGD(0.01))
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                       start_step=3, end_step=4, pruning_frequency=1))
    x, y = data((16,), n=32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])  # steps 0-3
    assert int(cb.weights["fc1"].slot.seen.numpy()) == 1  # step 3 only
    first_fn = model.train_function
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])  # steps 4-7
    assert int(cb.weights["fc1"].slot.seen.numpy()) == 2  # step 4 too, then nothing
    # the window's end switches scoring off at run time: the compiled step is not rebuilt (a second full
    # compile, 24 s for MobileNetV2, was paid here before)
    assert bool(cb.optimizer._held.scoring.numpy()) is False and model.train_function is first_fn
    frozen = {n: _score(cb, n) for n in NAMES}
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    for n in NAMES:
        np.testing.assert_array_equal(_score(cb, n), frozen[n])
    assert model.train_function is first_fn


def test_group_lasso_term_is_added_to_the_gradient_of_the_step():
    eta, coeff = 0.1, 0.05
    model = compiled(mlp(), keras.optimizers.SGD(eta))
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, start_step=0,
                              end_step=3, pruning_frequency=100, reg_type="group_lasso",
                              parameters={"reg_coeff": coeff}, op_names=["fc2"])
    cb = prepare_pruning(model, cfg)
    x, y = data((16,), n=8)
    w0 = model.get_layer("fc2").kernel.numpy()
    lay = cb.weights["fc2"].layout
    keep = compute_masks({"fc2": np.abs(lay.to_canonical(w0))}, "4x1", 0.5)["fc2"]
    w0m = w0 * lay.from_canonical(keep, w0.shape)
    g = _grads(model, x, y)["fc2"]  # of the weights before the step: the masks zero them after it (as on torch)
    term = GroupLasso(cfg.groups[0], get_pattern(cfg.groups[0])).grad_term("fc2", lay.to_canonical(w0m))
    want = (w0m - eta * (g + lay.from_canonical(term, w0.shape))) * lay.from_canonical(keep, w0.shape)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    np.testing.assert_allclose(model.get_layer("fc2").kernel.numpy(), want, rtol=1e-5, atol=1e-7)
    assert float(np.abs(term).max()) > 1e-3  # the term is not negligible
    assert not cb.weights["fc2"].slot.pending.numpy().any()  # consumed by the step


class Unused(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc1, self.idle, self.head = L.Dense(8, name="fc1"), L.Dense(8, name="idle"), L.Dense(4, name="head")

    def build(self, shape):
        self.fc1.build(shape)
        self.idle.build(shape)
        self.head.build((None, 8))

    def call(self, x):
        return self.head(self.fc1(x))


def test_a_layer_without_gradient_is_an_error_naming_it():
    model = Unused()
    model.build((None, 16))
    compiled(model)
    cb = prepare_pruning(model, config(pruning_type="snip", pattern="4x1", target_sparsity=0.5))
    with pytest.raises(PruningStateError, match="layer 'idle' received no gradient.*excluded_op_names"):
        model.fit(*data((16,), n=8), batch_size=8, epochs=1, verbose=0, callbacks=[cb])
