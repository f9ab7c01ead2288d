"""Pruning during model.fit: exact counts, block / N:M / channel structure, bounds, masks that stay zero."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune import WeightPruningConfig, compute_masks
from nc_prune.core.schedulers import sparsity_at
from nc_prune.core.selection import count_for_ratio

from .conftest import (L, as_2d, canonical, canonical_mask, compiled, config, data, fit, keras, mixed_model, mlp,
                       prepare_pruning, zero_blocks)


def _initial_canonical(model, cb):
    return {n: w.layout.to_canonical(w.variable.numpy()) for n, w in cb.weights.items()}


def _assert_masks_hold(cb):
    """Masked weights are exactly zero, and the mask is exactly the weight's non-zeros."""
    for n in cb.weights:
        w, m = canonical(cb, n), canonical_mask(cb, n)
        assert not w[~m].any(), f"{n}: a masked weight is not zero"
        assert np.count_nonzero(w) == m.sum(), f"{n}: an unmasked weight is zero"


def pruned_blocks(mask, bh, bw):
    """Fully pruned bh x bw blocks of a canonical keep-mask (fails on a partly pruned block)."""
    return zero_blocks(as_2d(mask.astype(np.int8)), bh, bw)


class Recorder(keras.callbacks.Callback):
    """After every batch: the pruned units per layer, and whether masked weights are zero."""

    def __init__(self, pruning, bh=4, bw=1):
        super().__init__()
        self.pruning, self.bh, self.bw, self.per_layer, self.held = pruning, bh, bw, [], []

    @property
    def zero_blocks(self):
        return [sum(d.values()) for d in self.per_layer]

    def on_train_batch_end(self, batch, logs=None):
        masks = {n: canonical_mask(self.pruning, n) for n in self.pruning.weights}
        self.per_layer.append({n: pruned_blocks(m, self.bh, self.bw) for n, m in masks.items()})
        self.held.append(all(not canonical(self.pruning, n)[~m].any() for n, m in masks.items()))


@pytest.mark.parametrize("pattern", ["4x1", "1x1", "2x2", "1xchannel", "channelx1", "2:4", "1:4"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_one_shot_magnitude_masks_equal_the_core_on_the_weights_before_step_0(pattern, scope):
    model = compiled(mixed_model())
    target = 0.5 if pattern != "1:4" else 0.25
    cb = prepare_pruning(model, config(pattern=pattern, target_sparsity=target, pruning_scope=scope,
                                       op_names=["conv", "proj", "mha/query"], start_step=0, end_step=0))
    before = _initial_canonical(model, cb)
    x, y = data((6, 6, 4), n=8)
    fit(model, cb, x, y, batch_size=4)
    want = compute_masks({n: np.abs(w) for n, w in before.items()}, pattern, target, scope)
    for n in cb.weights:
        np.testing.assert_array_equal(canonical_mask(cb, n), want[n], err_msg=n)
    _assert_masks_hold(cb)


def test_global_4x1_iterative_schedule_prunes_exactly_the_scheduled_blocks_at_every_step():
    model = compiled(mlp(), keras.optimizers.Adam(0.01))
    cfg = config(pattern="4x1", target_sparsity=0.8, start_step=2, end_step=11, pruning_frequency=3,
                 sparsity_decay_type="exp")
    cb = prepare_pruning(model, cfg)
    rec = Recorder(cb)
    x, y = data((16,), n=64)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[cb, rec])
    units = (32 // 4) * 16 + (32 // 4) * 32
    want = [count_for_ratio(units, sparsity_at(s, 2, 11, 3, 0.8, "exp")) for s in range(16)]
    assert rec.zero_blocks == want
    assert want[-1] == count_for_ratio(units, 0.8) and want[1] == 0 and len(set(want)) == 5
    assert all(rec.held)
    _assert_masks_hold(cb)


@pytest.mark.parametrize("pruning_type", ["magnitude", "gradient", "snip", "snip_momentum",
                                          "magnitude_progressive", "snip_momentum_progressive"])
def test_every_pruning_type_reaches_the_exact_target_with_4x1_blocks(pruning_type):
    model = compiled(mlp(), keras.optimizers.SGD(0.05, momentum=0.9))
    cb = prepare_pruning(model, config(pruning_type=pruning_type, pattern="4x1", target_sparsity=0.75,
                                       start_step=1, end_step=9, pruning_frequency=4))
    x, y = data((16,), n=48)
    fit(model, cb, x, y, batch_size=4)  # 12 steps
    total = sum(pruned_blocks(canonical_mask(cb, n), 4, 1) for n in cb.weights)
    assert total == count_for_ratio(8 * 16 + 8 * 32, 0.75)
    assert cb.report().total_zeros == total * 4
    _assert_masks_hold(cb)


def test_progressive_prunes_in_stages_between_pruning_steps():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pruning_type="magnitude_progressive", pattern="4x1", target_sparsity=0.8,
                                       start_step=0, end_step=8, pruning_frequency=8, progressive_steps=4,
                                       sparsity_decay_type="linear"))
    rec = Recorder(cb)
    x, y = data((16,), n=40)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[cb, rec])
    units = 8 * 16 + 8 * 32
    # two pruning steps (0 and 8), linear schedule: 0.4 at step 0, 0.8 at step 8. Step 0's new blocks are
    # pruned a quarter at a time (per layer, rounded) at steps 0, 2, 4 and 6.
    fresh = rec.per_layer[7]
    assert sum(fresh.values()) == count_for_ratio(units, 0.4)
    for k, step in enumerate((0, 2, 4, 6), start=1):
        assert rec.per_layer[step] == rec.per_layer[step + 1]  # nothing changes between stage steps
        for n, f in fresh.items():  # a quarter more of each layer's new blocks per stage (rounded)
            assert abs(rec.per_layer[step][n] - f * k / 4) < 1, (n, step)
    assert rec.zero_blocks[0] < rec.zero_blocks[2] < rec.zero_blocks[4] < rec.zero_blocks[6]
    assert rec.zero_blocks[8:] == [count_for_ratio(units, 0.8)] * 2
    _assert_masks_hold(cb)


def test_pattern_lock_keeps_exactly_the_zeros_the_model_had():
    model = compiled(mlp(), keras.optimizers.Adam(0.01))
    k = model.get_layer("fc2").kernel
    kv = k.numpy()
    kv[:, ::3] = 0.0
    k.assign(kv)
    cb = prepare_pruning(model, config(pruning_type="pattern_lock", pattern="4x1", op_names=["fc2"]))
    x, y = data((16,), n=32)
    fit(model, cb, x, y, epochs=2, batch_size=4)
    after = model.get_layer("fc2").kernel.numpy()
    np.testing.assert_array_equal(after == 0, kv == 0)
    assert not np.array_equal(after, kv)  # it trained


@pytest.mark.parametrize("pattern,target,zeros_per_group", [("2:4", 0.5, 2), ("1:4", 0.25, 1)])
def test_n_in_m_during_training_hits_the_target_without_overshoot(pattern, target, zeros_per_group):
    model = compiled(mlp(), keras.optimizers.SGD(0.05, momentum=0.9))
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern=pattern, target_sparsity=target,
                                       start_step=0, end_step=10, pruning_frequency=2))
    x, y = data((16,), n=64)
    fit(model, cb, x, y, batch_size=4)
    for n in cb.weights:
        groups = (canonical(cb, n) == 0).reshape(-1, 4).sum(axis=1)
        assert set(groups.tolist()) == {zeros_per_group}, n
    rep = cb.report()
    assert sum(rep[n].zeros for n in cb.weights) == target * sum(rep[n].params for n in cb.weights)
    assert rep["head"].zeros == 0 and rep["head"].pattern == "-"  # the report covers the whole model
    _assert_masks_hold(cb)


def test_n_in_m_below_its_ratio_prunes_only_the_lowest_groups():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="2:4", target_sparsity=0.25, start_step=0, end_step=0))
    fit(model, cb, *data((16,), n=8), batch_size=8)
    groups = np.concatenate([(canonical(cb, n) == 0).reshape(-1, 4).sum(axis=1) for n in cb.weights])
    assert sorted(set(groups.tolist())) == [0, 2]
    assert int((groups == 2).sum()) == count_for_ratio(groups.size, 0.5)


def test_channel_patterns_remove_whole_filters_and_whole_input_channels_of_a_conv():
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, name="c1")(inp)
    x = L.Conv2D(8, 3, name="c2")(x)
    out = L.Dense(2, name="head")(L.Flatten()(x))
    model = compiled(keras.Model(inp, out))
    cb = prepare_pruning(model, WeightPruningConfig(
        [{"op_names": ["c1"], "pattern": "1xchannel"}, {"op_names": ["c2"], "pattern": "channelx1"}],
        pruning_type="magnitude", target_sparsity=0.5, start_step=0, end_step=0))
    fit(model, cb, *data((6, 6, 4), n_out=2, n=4), batch_size=4)
    k1 = model.get_layer("c1").kernel.numpy()  # (kh, kw, in, out): a filter is k1[..., o]
    filters_zero = [bool((k1[..., o] == 0).all()) for o in range(8)]
    assert sum(filters_zero) == 4 and all((k1[..., o] != 0).all() for o in range(8) if not filters_zero[o])
    k2 = model.get_layer("c2").kernel.numpy()  # an input channel is k2[:, :, i, :]
    chans_zero = [bool((k2[:, :, i, :] == 0).all()) for i in range(8)]
    assert sum(chans_zero) == 4 and all((k2[:, :, i, :] != 0).all() for i in range(8) if not chans_zero[i])


def test_per_layer_bounds_hold_in_global_scope():
    model = compiled(mlp(width=32))
    cb = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.7, start_step=0, end_step=0,
                                       min_sparsity_ratio_per_op=0.6, max_sparsity_ratio_per_op=0.75))
    fc1 = model.get_layer("fc1").kernel
    fc1.assign(fc1.numpy() * 1000.0)  # global ranking alone would prune only fc2
    fit(model, cb, *data((16,), n=8), batch_size=8)
    rep = cb.report()
    fc1_units, fc2_units = 128, 256
    lo_fc1 = 77  # ceil(0.6 * 128): fc1 is held at its minimum
    k = count_for_ratio(fc1_units + fc2_units, 0.7)
    assert rep["fc1"].zeros == 4 * lo_fc1
    assert rep["fc2"].zeros == 4 * (k - lo_fc1) and k - lo_fc1 <= int(0.75 * fc2_units)
    assert 0.6 <= rep["fc1"].ratio <= 0.75 and 0.6 <= rep["fc2"].ratio <= 0.75


def test_local_scope_prunes_each_layer_to_the_target():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.6, pruning_scope="local",
                                       start_step=0, end_step=0))
    fit(model, cb, *data((16,), n=8), batch_size=8)
    rep = cb.report()
    assert rep["fc1"].zeros == 4 * count_for_ratio(128, 0.6) and rep["fc2"].zeros == 4 * count_for_ratio(256, 0.6)


def test_masked_weights_stay_zero_at_every_step_with_adam_and_ema():
    model = compiled(mlp(), keras.optimizers.Adam(0.05, use_ema=True, ema_overwrite_frequency=3))
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=0, end_step=0))
    rec = Recorder(cb, 1, 1)
    x, y = data((16,), n=40)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[cb, rec])
    assert all(rec.held) and len(rec.held) == 20
    assert set(rec.zero_blocks) == {count_for_ratio(16 * 32 + 32 * 32, 0.5)}
    _assert_masks_hold(cb)


def test_mixed_conv_depthwise_dense_attention_model_with_snip_momentum():
    model = compiled(mixed_model(), keras.optimizers.Adam(0.01))
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.7,
                                       start_step=0, end_step=6, pruning_frequency=2))
    x, y = data((6, 6, 4), n=32)
    fit(model, cb, x, y, batch_size=4)
    units = {n: as_2d(canonical(cb, n)).size // 4 for n in cb.weights}
    assert units == {"conv": 72, "dw": 36, "proj": 64, "mha/query": 64, "mha/key": 64, "mha/value": 64,
                     "mha/attention_output": 64}
    pruned = {n: zero_blocks(as_2d(canonical(cb, n)), 4, 1) for n in cb.weights}
    assert sum(pruned.values()) == count_for_ratio(sum(units.values()), 0.7)
    assert all(pruned[n] <= int(0.98 * units[n]) for n in units)
    _assert_masks_hold(cb)


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed", "nested"])
def test_every_model_kind_prunes_exactly(kind):
    if kind == "sequential":
        model = mlp()
    elif kind == "functional":
        inp = keras.Input((16,))
        h = L.Dense(32, activation="relu", name="fc1")(inp)
        h = L.Dense(32, activation="relu", name="fc2")(h)
        model = keras.Model(inp, L.Dense(4, name="head")(h))
    elif kind == "subclassed":
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.fc1, self.fc2 = L.Dense(32, activation="relu", name="fc1"), L.Dense(32, name="fc2")
                self.head = L.Dense(4, name="head")

            def call(self, x):
                return self.head(self.fc2(self.fc1(x)))
        model = Sub()
        model(np.zeros((1, 16), "float32"))
    else:
        inner = keras.Sequential([L.Dense(32, activation="relu", name="fc1"), L.Dense(32, name="fc2")], name="body")
        inp = keras.Input((16,))
        model = keras.Model(inp, L.Dense(4, name="head")(inner(inp)))
    compiled(model)
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                       start_step=0, end_step=4, pruning_frequency=2))
    fit(model, cb, *data((16,), n=32), batch_size=4)
    prefix = "body/" if kind == "nested" else ""
    assert sorted(cb.weights) == [prefix + "fc1", prefix + "fc2"]
    assert cb.report().total_zeros == 4 * count_for_ratio(8 * 16 + 8 * 32, 0.5)
    _assert_masks_hold(cb)


def test_groups_with_different_patterns_and_schedules():
    model = compiled(mlp())
    cb = prepare_pruning(model, WeightPruningConfig(
        [{"op_names": ["fc1"], "pattern": "4x1", "target_sparsity": 0.5, "start_step": 0, "end_step": 0},
         {"op_names": ["fc2"], "pattern": "2:4", "target_sparsity": 0.5, "pruning_type": "snip_momentum",
          "start_step": 1, "end_step": 3}], pruning_type="magnitude"))
    fit(model, cb, *data((16,), n=32), batch_size=4)
    assert zero_blocks(as_2d(canonical(cb, "fc1")), 4, 1) == 64
    assert set((canonical(cb, "fc2") == 0).reshape(-1, 4).sum(axis=1).tolist()) == {2}
    assert cb.report()["fc1"].pattern == "4x1" and cb.report()["fc2"].pattern == "2:4"


def test_xla_compiled_training_step_applies_masks_too():
    model = mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    cb = prepare_pruning(model, config(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                       start_step=0, end_step=4, pruning_frequency=2))
    fit(model, cb, *data((16,), n=32), batch_size=4)
    assert model.jit_compile
    assert cb.report().total_zeros == 4 * count_for_ratio(384, 0.5)
    _assert_masks_hold(cb)


def _kind_model(kind):
    if kind == "Conv1D":
        body, shape = [L.Conv1D(8, 3, name="k")], (10, 4)
    elif kind == "Conv3D":
        body, shape = [L.Conv3D(8, 2, name="k")], (3, 3, 3, 4)
    elif kind == "Conv2DTranspose":
        body, shape = [L.Conv2DTranspose(8, 3, name="k")], (4, 4, 4)
    elif kind == "SeparableConv2D":
        body, shape = [L.SeparableConv2D(8, 3, depth_multiplier=2, name="k")], (5, 5, 4)
    else:  # EinsumDense with a multi-axis output
        body, shape = [L.EinsumDense("ab,bcd->acd", output_shape=(2, 4), name="k")], (8,)
    return keras.Sequential([keras.Input(shape)] + body + [L.Flatten(), L.Dense(2, name="head")]), shape


@pytest.mark.parametrize("kind", ["Conv1D", "Conv3D", "Conv2DTranspose", "SeparableConv2D", "EinsumDense"])
def test_every_layer_kind_prunes_with_the_core_masks_and_4x1_structure(kind):
    model, shape = _kind_model(kind)
    compiled(model)
    cb = prepare_pruning(model, config(pattern="4x1", target_sparsity=0.5, pruning_scope="local",
                                       start_step=0, end_step=0))
    before = _initial_canonical(model, cb)
    fit(model, cb, *data(shape, n_out=2, n=8), batch_size=4)
    want = compute_masks({n: np.abs(w) for n, w in before.items()}, "4x1", 0.5, "local")
    expected = ["k/depthwise_kernel", "k/pointwise_kernel"] if kind == "SeparableConv2D" else ["k"]
    assert sorted(cb.weights) == expected
    for n in cb.weights:
        np.testing.assert_array_equal(canonical_mask(cb, n), want[n])
        units = as_2d(before[n]).size // 4
        assert zero_blocks(as_2d(canonical(cb, n)), 4, 1) == count_for_ratio(units, 0.5)
    _assert_masks_hold(cb)
