"""model.fit with the pruning callback on whichever Keras backend this process runs (TensorFlow in-process;
``test_other_backends.py`` runs this module under ``KERAS_BACKEND=jax`` and ``torch``), compiled and not."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune.core.selection import count_for_ratio

from .conftest import as_2d, canonical, canonical_mask, config, data, fit, keras, mlp, prepare_pruning, zero_blocks

BACKEND = keras.backend.backend()
JIT = [False, True] if BACKEND != "torch" else [False]  # torch's jit_compile is torch.compile: minutes on 2 cores
UNITS_4X1 = (32 // 4) * 16 + (32 // 4) * 32  # fc1 (32, 16) and fc2 (32, 32), canonical, in 4x1 blocks


def _model(jit, optimizer=None):
    model = mlp()
    model.compile(optimizer or keras.optimizers.Adam(0.01), "mse", jit_compile=jit)
    return model


def _zeros_hold(cb):
    return all(not canonical(cb, n)[~canonical_mask(cb, n)].any() for n in cb.weights)


@pytest.mark.parametrize("jit", JIT)
@pytest.mark.parametrize("pruning_type", ["magnitude", "snip_momentum"])
def test_fit_prunes_exact_4x1_blocks_and_the_zeros_stay(jit, pruning_type):
    model = _model(jit)
    cb = prepare_pruning(model, config(pruning_type=pruning_type, pattern="4x1", target_sparsity=0.75,
                                       start_step=2, end_step=11, pruning_frequency=3))
    x, y = data((16,), n=64)
    fit(model, cb, x, y, batch_size=4)  # 16 steps: pruning at 2, 5, 8, 11
    blocks = sum(zero_blocks(as_2d(canonical(cb, n)), 4, 1) for n in cb.weights)
    assert blocks == count_for_ratio(UNITS_4X1, 0.75) == 288
    assert cb.report().total_zeros == 4 * 288
    assert cb.report()["head"].zeros == 0
    assert cb.global_step == int(model.optimizer.iterations.numpy()) == 16
    assert _zeros_hold(cb)
    masks = {n: canonical_mask(cb, n).copy() for n in cb.weights}
    before = [w.copy() for w in model.get_weights()]
    fit(model, cb, x, y, batch_size=4)  # 16 more steps after the schedule: masks fixed, zeros kept, weights train
    assert cb.global_step == 32
    for n in cb.weights:
        np.testing.assert_array_equal(canonical_mask(cb, n), masks[n], err_msg=n)
        assert int((canonical(cb, n) == 0).sum()) == int((~masks[n]).sum()), n
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("jit", JIT)
def test_fit_prunes_2_in_4_groups_exactly(jit):
    model = _model(jit, keras.optimizers.SGD(0.05, momentum=0.9))
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="2:4", target_sparsity=0.5,
                                       start_step=0, end_step=6, pruning_frequency=2))
    fit(model, cb, *data((16,), n=40), batch_size=4)  # 10 steps
    for n in cb.weights:
        groups = (canonical(cb, n) == 0).reshape(-1, 4).sum(axis=1)
        assert sorted(set(groups.tolist())) == [2], n
    assert cb.report().total_zeros == (16 * 32 + 32 * 32) // 2 == 768
    assert _zeros_hold(cb) and cb.global_step == 10


@pytest.mark.parametrize("jit", JIT)
def test_save_load_resume_is_bit_identical(tmp_path, jit):
    cfg = config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, start_step=0, end_step=12,
                 pruning_frequency=4)
    x, y = data((16,), n=64)
    model = _model(jit)
    init = model.get_weights()
    cb = prepare_pruning(model, cfg)
    fit(model, cb, x, y)  # 8 steps
    model.save(tmp_path / "mid.keras")
    loaded = keras.models.load_model(tmp_path / "mid.keras")
    cb2 = prepare_pruning(loaded)
    assert cb2.global_step == 8
    fit(loaded, cb2, x, y)

    straight = _model(jit)
    straight.set_weights(init)
    cb3 = prepare_pruning(straight, cfg)
    fit(straight, cb3, x, y, epochs=2)
    assert cb2.global_step == cb3.global_step == 16
    for a, b in zip(loaded.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    for n in cb3.weights:
        np.testing.assert_array_equal(canonical_mask(cb2, n), canonical_mask(cb3, n), err_msg=n)
    assert cb3.report().total_zeros == 768
