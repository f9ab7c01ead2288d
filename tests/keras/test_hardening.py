"""What an adversarial pass found in the Keras backend: lost work and silent wrong results, pinned down."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune.core.errors import PruningStateError

from .conftest import canonical_mask, compiled, config, data, fit, keras, mlp, prepare_pruning


def _zeros(model, name):
    return int((model.get_layer(name).kernel.numpy() == 0).sum())


def test_a_fit_without_the_callback_does_not_use_up_the_schedule():
    x, y = data((16,), n=64)
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=2, end_step=6,
                                       pruning_frequency=2))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # a warm-up without the callback: 16 optimizer steps
    assert cb.global_step == 0 and _zeros(model, "fc1") == 0
    fit(model, cb, x, y)  # 8 steps with it: the whole schedule runs
    assert cb.global_step == 8
    assert _zeros(model, "fc1") + _zeros(model, "fc2") == 0.5 * (512 + 1024)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # after it: masks still hold, the step stays
    assert cb.global_step == 8 and _zeros(model, "fc1") + _zeros(model, "fc2") == 768


def test_a_custom_loop_that_skips_on_train_begin_is_told():
    model = mlp()
    opt = keras.optimizers.SGD(0.05)
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=0, end_step=2), optimizer=opt)
    with pytest.raises(PruningStateError, match=r"call callback.on_train_begin\(\) before the first training step"):
        cb.on_train_batch_begin(0)


@pytest.mark.parametrize("ptype", ["snip_momentum_progressive", "magnitude_progressive"])
def test_progressive_pruning_resumes_bit_exactly_after_save_and_load(tmp_path, ptype):
    cfg = config(pruning_type=ptype, pattern="4x1", target_sparsity=0.75, start_step=0, end_step=16,
                 pruning_frequency=8, progressive_steps=4)
    x, y = data((16,), n=24)  # 3 steps an epoch: saves land at steps 3, 6 (inside the first interval) and 9
    model = compiled(mlp(), keras.optimizers.SGD(0.05, momentum=0.9))
    cb = prepare_pruning(model, cfg)
    saved = []
    for epoch in range(3):
        fit(model, cb, x, y)
        path = tmp_path / f"e{epoch}.keras"
        model.save(path)
        saved.append((path, cb.global_step))
    fit(model, cb, x, y, epochs=4)  # to step 21, past the schedule
    want = model.get_weights()
    for path, step in saved:
        loaded = keras.models.load_model(path)
        cb2 = prepare_pruning(loaded)
        assert cb2.global_step == step
        fit(loaded, cb2, x, y, epochs=7 - step // 3)
        for a, b in zip(want, loaded.get_weights()):
            np.testing.assert_array_equal(a, b)


def _pruned(tmp_path):
    x, y = data((16,), n=64)
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.75, start_step=0, end_step=4,
                                       pruning_frequency=2))
    fit(model, cb, x, y)
    path = tmp_path / "pruned.keras"
    model.save(path)
    return path


def test_a_saved_model_prepared_under_another_plan_is_refused(tmp_path):
    loaded = keras.models.load_model(_pruned(tmp_path))
    before = [w.copy() for w in loaded.get_weights()]
    with pytest.raises(PruningStateError) as info:
        prepare_pruning(loaded, config(pattern="2:4", target_sparsity=0.5, start_step=0, end_step=4))
    msg = str(info.value)
    for part in ("layer 'fc1': saved with pattern '4x1', target 0.75", "now pattern '2:4', target 0.5",
                 "layer 'fc2'", "resume_from_pruned_checkpoint=True"):
        assert part in msg
    for a, b in zip(before, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_from_pruned_checkpoint_re_plans_a_saved_model_from_its_zeros(tmp_path):
    loaded = keras.models.load_model(_pruned(tmp_path))
    zeros_before = _zeros(loaded, "fc1") + _zeros(loaded, "fc2")
    with pytest.warns(UserWarning, match=r"re-planning fc1, fc2 from the model's zeros"):
        cb = prepare_pruning(loaded, config(pattern="2:4", target_sparsity=0.5, start_step=0, end_step=4,
                                            resume_from_pruned_checkpoint=True))
    kernel = loaded.get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(canonical_mask(cb, "fc1"), kernel.T != 0)
    assert _zeros(loaded, "fc1") + _zeros(loaded, "fc2") == zeros_before == 0.75 * (512 + 1024)


def test_a_callback_given_to_another_models_fit_says_so():
    x, y = data((16,), n=16)
    model, other = compiled(mlp()), compiled(mlp())
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5))
    with pytest.raises(PruningStateError, match=r"prepared for model 'mlp'.*prepare_pruning\(model, config\)"):
        other.fit(x, y, verbose=0, callbacks=[cb])


def test_a_step_the_loss_scaler_skips_is_not_counted_and_the_schedule_stays_with_the_saved_step(tmp_path):
    x, y = data((16,), n=32)
    model = compiled(mlp())
    model.optimizer = keras.optimizers.LossScaleOptimizer(model.optimizer, initial_scale=2.0 ** 15)
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=0, end_step=6,
                                       pruning_frequency=2))
    wrapper = cb.optimizer
    big = np.full_like(y, 1e36)  # the first batch's loss overflows: its step is skipped
    fit(model, cb, np.concatenate([x[:8], x[8:]]), np.concatenate([big[:8], y[8:]]))
    applied = int(model.optimizer.inner_optimizer.iterations.numpy())
    assert applied == 3 and wrapper.prune_step == 3 == cb.global_step
    assert cb._step == wrapper.prune_step  # the callback's own count agrees with what a save would record
