"""The callback without model.fit: a tf.GradientTape loop applying gradients with ``callback.optimizer``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nc_prune.core.selection import count_for_ratio

from .conftest import canonical, canonical_mask, compiled, config, data, keras, mlp, prepare_pruning

CFG = dict(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.75, start_step=1, end_step=7,
           pruning_frequency=2)


def _custom_loop(model, cb, x, y, batch_size=8):
    opt = cb.optimizer
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    cb.on_train_begin()
    for i in range(len(x) // batch_size):
        cb.on_train_batch_begin(i)
        train_step(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
        cb.on_train_batch_end(i)
    cb.on_train_end()


def test_custom_loop_prunes_like_fit():
    x, y = data((16,), n=80)
    loop_model = mlp()
    init = loop_model.get_weights()
    cb = prepare_pruning(loop_model, config(**CFG), optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    assert getattr(loop_model, "optimizer", None) is None  # the model is left alone; the loop uses cb.optimizer
    _custom_loop(loop_model, cb, x, y)
    assert cb.global_step == 10
    total = sum(int((canonical_mask(cb, n) == 0).sum()) for n in cb.weights)
    assert total == 4 * count_for_ratio(8 * 16 + 8 * 32, 0.75)
    for n in cb.weights:
        assert not canonical(cb, n)[~canonical_mask(cb, n)].any()

    fit_model = compiled(mlp(), keras.optimizers.SGD(0.05, momentum=0.9))
    fit_model.set_weights(init)
    cb_fit = prepare_pruning(fit_model, config(**CFG))
    fit_model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cb_fit])
    for n in cb.weights:
        np.testing.assert_array_equal(canonical_mask(cb, n), canonical_mask(cb_fit, n))
    for a, b in zip(loop_model.get_weights(), fit_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
