"""The callback without model.fit: a loop applying gradients with ``callback.optimizer`` — a tf.GradientTape in a
tf.function on TensorFlow, jax.grad of ``stateless_call`` on JAX, autograd on torch (each backend's own way)."""

from __future__ import annotations

import numpy as np

from nc_prune.core.selection import count_for_ratio

from .conftest import canonical, canonical_mask, compiled, config, data, keras, mlp, prepare_pruning

CFG = dict(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.75, start_step=1, end_step=7,
           pruning_frequency=2)


def _train_step(model, opt, loss_fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return step
    if backend == "jax":
        import jax

        def loss_of(trainable, non_trainable, xb, yb):
            pred, _ = model.stateless_call(trainable, non_trainable, xb, training=True)
            return loss_fn(yb, pred)

        grad_fn = jax.grad(loss_of)

        def step(xb, yb):
            grads = grad_fn([v.value for v in model.trainable_variables],
                            [v.value for v in model.non_trainable_variables], xb, yb)
            opt.apply(grads, model.trainable_variables)
        return step
    import torch

    def step(xb, yb):
        model.zero_grad()
        loss_fn(torch.from_numpy(yb), model(torch.from_numpy(xb), training=True)).backward()
        with torch.no_grad():
            opt.apply([v.value.grad for v in model.trainable_variables], model.trainable_variables)
    return step


def _custom_loop(model, cb, x, y, batch_size=8):
    step = _train_step(model, cb.optimizer, keras.losses.MeanSquaredError())
    cb.on_train_begin()
    for i in range(len(x) // batch_size):
        cb.on_train_batch_begin(i)
        step(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
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
