"""model.compile(steps_per_execution=4): the pruning hooks run inside the compiled block of steps (a host call at
the steps where the schedule acts) and reach exactly the state of steps_per_execution=1 — the same masks, the same
weights, the step counter equal to ``optimizer.iterations``. Runs on TensorFlow in-process and under JAX through
``test_other_backends.py`` (Keras's torch backend refuses steps_per_execution > 1 itself)."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune.core.errors import PruningStateError
from nc_prune.core.selection import count_for_ratio

from .conftest import as_2d, canonical, canonical_mask, config, data, keras, mlp, prepare_pruning, zero_blocks

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND == "torch",
                                reason="Keras's torch backend refuses steps_per_execution > 1 (make_train_function)")
JIT = [False, True] if BACKEND == "jax" else [False]  # TF + XLA is refused (see the last test)
UNITS_4X1 = (32 // 4) * 16 + (32 // 4) * 32  # fc1 (32, 16) and fc2 (32, 32), canonical, in 4x1 blocks


def _run(spe, cfg, jit=False, n=88, batch_size=4, epochs=1, optimizer=None):
    """22 steps per epoch at batch 4: 5 blocks of 4 and one of 2 with steps_per_execution=4."""
    keras.utils.set_random_seed(0)
    model = mlp()
    model.compile(optimizer or keras.optimizers.Adam(0.01), "mse", steps_per_execution=spe, jit_compile=jit)
    cb = prepare_pruning(model, cfg)
    x, y = data((16,), n=n)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb])
    masks = {name: canonical_mask(cb, name).copy() for name in cb.weights}
    return model, cb, masks


def _same(a, b):
    (ma, cba, masks_a), (mb, cbb, masks_b) = a, b
    assert sorted(masks_a) == sorted(masks_b)
    for name in masks_a:
        np.testing.assert_array_equal(masks_a[name], masks_b[name], err_msg=name)
    for wa, wb in zip(ma.get_weights(), mb.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("pruning_type", ["magnitude", "snip_momentum"])
def test_4x1_blocks_identical_to_one_step_per_execution(jit, pruning_type):
    # pruning at 2, 5, 8, 11, 14 (and 17: past end_step 15 no more) — inside blocks, at their first and last steps
    cfg = config(pruning_type=pruning_type, pattern="4x1", target_sparsity=0.75, start_step=2, end_step=15,
                 pruning_frequency=3)
    one = _run(1, cfg, jit)
    four = _run(4, cfg, jit)
    _same(one, four)
    model, cb, masks = four
    blocks = sum(zero_blocks(as_2d(canonical(cb, n)), 4, 1) for n in cb.weights)
    assert blocks == count_for_ratio(UNITS_4X1, 0.75) == 288
    assert cb.report().total_zeros == 4 * 288 and cb.report()["head"].zeros == 0
    assert cb.global_step == int(np.asarray(model.optimizer.iterations.numpy())) == 22
    for n in cb.weights:
        assert int((canonical(cb, n) == 0).sum()) == int((~masks[n]).sum()), n


@pytest.mark.parametrize("jit", JIT)
def test_2_in_4_and_a_second_epoch_identical(jit):
    cfg = config(pruning_type="snip_momentum", pattern="2:4", target_sparsity=0.5, start_step=0, end_step=25,
                 pruning_frequency=5)  # 0, 5, ..., 25: the last one in the second epoch (steps 22-43)
    one = _run(1, cfg, jit, epochs=2, optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    four = _run(4, cfg, jit, epochs=2, optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    _same(one, four)
    model, cb, _ = four
    for n in cb.weights:
        groups = (canonical(cb, n) == 0).reshape(-1, 4).sum(axis=1)
        assert sorted(set(groups.tolist())) == [2], n
    assert cb.report().total_zeros == (16 * 32 + 32 * 32) // 2 == 768
    assert cb.global_step == int(np.asarray(model.optimizer.iterations.numpy())) == 44


def test_progressive_and_group_lasso_identical():
    # progressive stages between pruning steps (begin hooks) and a regularizer term in every window step
    cfg = config(pruning_type="snip_momentum_progressive", pattern="4x1", target_sparsity=0.5, start_step=1,
                 end_step=13, pruning_frequency=4, progressive_steps=2, reg_type="group_lasso",
                 parameters={"reg_coeff": 0.01})
    one = _run(1, cfg)
    four = _run(4, cfg)
    _same(one, four)
    assert four[1].report().total_zeros == 768 and four[1].global_step == 22


def test_magnitude_with_group_lasso_identical():
    cfg = config(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, start_step=0, end_step=9,
                 pruning_frequency=3, reg_type="group_lasso", parameters={"reg_coeff": 0.01})
    _same(_run(1, cfg), _run(4, cfg))


def test_back_to_one_step_per_execution_continues_the_same_schedule():
    cfg = config(pruning_type="magnitude", pattern="4x1", target_sparsity=0.75, start_step=2, end_step=38,
                 pruning_frequency=6)
    one = _run(1, cfg, epochs=2)
    model, cb, _ = _run(4, cfg)  # 22 steps with 4 per execution
    model.compile(model.optimizer, "mse", steps_per_execution=1, jit_compile=False)
    cb = prepare_pruning(model, cfg)  # recompiled: the same wrapper, a new callback
    x, y = data((16,), n=88)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    assert cb.global_step == 44
    _same(one, (model, cb, {n: canonical_mask(cb, n).copy() for n in cb.weights}))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="JAX compiles io_callback; the refusal is TensorFlow's XLA")
def test_xla_with_several_steps_per_execution_is_refused_with_the_fix():
    model = mlp()
    model.compile("sgd", "mse", steps_per_execution=2, jit_compile=True)
    cb = prepare_pruning(model, config())
    with pytest.raises(PruningStateError, match="steps_per_execution=2, jit_compile=True.*jit_compile=False"):
        model.fit(*data((16,), n=8), verbose=0, callbacks=[cb])
