"""Layer selection rules, and PruningSession driving the shipped pruners through a numpy glue class."""

from __future__ import annotations

import numpy as np
import pytest

from _core_reference import floor_count
from nc_prune import (BasePruner, ConfigError, LayerInfo, NoPrunableLayerError, PruningSession, PruningStateError,
                      WeightPruningConfig, compose_pruner_class, plan_groups, select_group, sparsity_at)
from nc_prune.core.arrays import to_2d
from nc_prune.core.layers import head_name

LAYERS = [
    LayerInfo("stem.conv", ("Conv2d",), (8, 3, 3, 3)),
    LayerInfo("blocks.0.fc1", ("Linear",), (16, 8), True),
    LayerInfo("blocks.0.fc2", ("Linear",), (8, 16), True),
    LayerInfo("blocks.1.fc1", ("Dense", "Linear"), (16, 8), True),
    LayerInfo("blocks.1.dw", ("Conv1D",), (8, 1, 3)),
    LayerInfo("norm", ("LayerNorm",), (8,)),
    LayerInfo("head", ("Linear",), (10, 8), True),
]


def names(group_kw, layers=LAYERS):
    group = WeightPruningConfig(**group_kw).groups[0]
    return [l.name for l in select_group(layers, group, 0)]


def test_head_is_last_linear():
    assert head_name(LAYERS) == "head"
    assert head_name([LayerInfo("c", ("Conv2d",), (4, 4, 1, 1))]) is None


def test_type_match_is_substring_of_any_type_name():
    assert names({}) == ["stem.conv", "blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.dw"]
    assert names({"pruning_op_types": ["Conv"]}) == ["stem.conv", "blocks.1.dw"]
    assert names({"pruning_op_types": ["Conv2"]}) == ["stem.conv"]
    assert names({"pruning_op_types": ["Linear"]}) == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1"]  # alias
    assert names({"pruning_op_types": ["Dense"]}) == ["blocks.1.fc1"]
    assert names({"pruning_op_types": ["Norm"]}) == ["norm"]


def test_op_names_are_searched_and_excluded_removes():
    assert names({"op_names": ["fc1"]}) == ["blocks.0.fc1", "blocks.1.fc1"]
    assert names({"op_names": [r"^blocks\.0\."]}) == ["blocks.0.fc1", "blocks.0.fc2"]
    assert names({"op_names": ["fc"], "excluded_op_names": ["1.fc1$"]}) == ["blocks.0.fc1", "blocks.0.fc2"]
    assert names({"excluded_op_names": ["blocks"]}) == ["stem.conv"]


def test_head_excluded_unless_fullmatched():
    assert "head" not in names({})
    assert names({"op_names": ["hea"]}) == []  # re.search matches, but the head needs a full match
    assert names({"op_names": ["head"]}) == ["head"]
    assert names({"op_names": ["he.d"]}) == ["head"]
    assert names({"op_names": ["fc2", "hea"]}) == ["blocks.0.fc2"]


def test_empty_group_error_lists_layers_and_mentions_head():
    groups = WeightPruningConfig([{"op_names": ["nothing"]}]).groups
    with pytest.raises(NoPrunableLayerError) as info:
        plan_groups(LAYERS, groups)
    msg = str(info.value)
    assert msg.startswith("pruning_configs[0] (op_names=['nothing'], pruning_op_types=['Conv', 'Linear'], "
                          "excluded_op_names=[]) selects no layer.")
    for l in LAYERS:
        assert f"{l.name} ({l.type_names[0]})" in msg
    assert "the head 'head' is excluded unless an op_names regex matches its full name" in msg
    many = [LayerInfo(f"l{i}", ("Linear",), (4, 4), True) for i in range(20)]
    with pytest.raises(NoPrunableLayerError, match="l11 \\(Linear\\) and 8 more"):
        plan_groups(many, WeightPruningConfig([{"op_names": ["zzz"]}]).groups)


def test_overlapping_groups_are_an_error():
    groups = WeightPruningConfig([{"op_names": ["fc1"]}, {"op_names": ["blocks.1"]}]).groups
    with pytest.raises(ConfigError, match=r"layer 'blocks.1.fc1' is selected by pruning_configs\[0\] and "
                                          r"pruning_configs\[1\]"):
        plan_groups(LAYERS, groups)


def test_plan_groups_shape_checks():
    groups = WeightPruningConfig([{"op_names": ["fc"], "pattern": "4x1"}, {"op_names": ["stem"], "pattern": "2:4"}],
                                 target_sparsity=0.5).groups
    with pytest.warns(UserWarning, match=r"'stem.conv' with weight shape \(8, 3, 3, 3\).*left dense"):
        with pytest.raises(NoPrunableLayerError, match=r"pruning_configs\[1\].*none of the selected layers fits "
                                                       r"pattern '2:4': stem.conv \(8, 3, 3, 3\)"):
            plan_groups(LAYERS, groups)
    odd = LAYERS + [LayerInfo("blocks.2.fc1", ("Linear",), (6, 8), True), LayerInfo("z", ("Linear",), (4, 4), True)]
    with pytest.warns(UserWarning, match=r"'blocks.2.fc1' with weight shape \(6, 8\)"):
        plans = plan_groups(odd, WeightPruningConfig([{"op_names": ["fc"]}]).groups)
    assert [l.name for l in plans[0]] == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1"]


# ---- a numpy "framework" for the session ---------------------------------------------------------
class NumpyGlue(BasePruner):
    """Weights, gradients and masks live in plain dicts: {"w": array, "g": array, "mask": array}."""

    def _weight(self, name):
        return self.modules[name]["w"]

    def _grad(self, name):
        return self.modules[name].get("g")

    def _to_canonical(self, name, value):
        return np.asarray(value)

    def _get_mask(self, name):
        return self.modules[name].setdefault("mask", np.ones(self.modules[name]["w"].shape, dtype=bool))

    def _set_mask(self, name, keep):
        self.modules[name]["mask"] = np.array(keep, dtype=bool)

    def _apply_masks(self):
        for m in self.modules.values():
            if "mask" in m:
                m["w"] *= m["mask"]

    def _add_to_grad(self, name, term):
        self.modules[name]["g"] = self.modules[name]["g"] + term


def make_store(seed, shapes):
    rng = np.random.default_rng(seed)
    return rng, {n: {"w": rng.standard_normal(s)} for n, s in shapes.items()}


def session(cfg, store, layer_types=("Linear",)):
    layers = [LayerInfo(n, layer_types, v["w"].shape, True) for n, v in store.items()]
    layers.append(LayerInfo("head", ("Linear",), (4, 4), True))
    return PruningSession(cfg, layers, lambda plan: {l.name: store[l.name] for l in plan}, NumpyGlue)


def train_step(sess, rng, store, on_grads=None):
    sess.on_step_begin()
    for v in store.values():
        v["g"] = rng.standard_normal(v["w"].shape)
    if on_grads:
        on_grads()
    sess.on_before_optimizer_step()
    for v in store.values():
        v["w"] -= 0.01 * v["g"]
    sess.on_after_optimizer_step()
    sess.on_step_end()


def block_pruned(mask, bh, bw):
    grid = to_2d(mask).reshape(mask.shape[0] // bh, bh, -1, bw)
    assert (grid.all(axis=(1, 3)) | ~grid.any(axis=(1, 3))).all(), "a block is partly pruned"
    return int((~grid.any(axis=(1, 3))).sum())


def test_compose_pruner_class_is_cached_and_named():
    from nc_prune.core.pruner import BasicPruner
    cls = compose_pruner_class(NumpyGlue, BasicPruner)
    assert cls is compose_pruner_class(NumpyGlue, BasicPruner)
    assert cls.__name__ == "NumpyGlueBasicPruner" and issubclass(cls, NumpyGlue) and issubclass(cls, BasicPruner)


def test_basic_snip_momentum_follows_the_schedule_exactly():
    shapes = {"fc1": (16, 8), "fc2": (8, 16), "conv": (8, 4, 3, 3)}
    rng, store = make_store(0, shapes)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.75, start_step=2,
                              end_step=10, pruning_frequency=2, sparsity_decay_type="exp")
    sess = session(cfg, store)
    pruner = sess.pruners[0]
    assert list(pruner.modules) == ["fc1", "fc2", "conv"] and type(pruner).__name__ == "NumpyGlueBasicPruner"
    units = sum(int(np.prod(s)) // 4 for s in shapes.values())
    expected_scores = {n: None for n in shapes}
    prev = {n: np.ones(s, dtype=bool) for n, s in shapes.items()}
    sess.on_train_begin()
    for step in range(14):
        def track():
            if 2 <= step <= 10:
                for n in shapes:
                    new = np.abs(store[n]["w"] * store[n]["g"])
                    expected_scores[n] = new if expected_scores[n] is None else 0.9 * expected_scores[n] + new
        train_step(sess, rng, store, track)
        masks = {n: store[n].get("mask", np.ones(shapes[n], dtype=bool)) for n in shapes}
        pruned = sum(block_pruned(m, 4, 1) for m in masks.values())
        last_pruning = max([s for s in (2, 4, 6, 8, 10) if s <= step], default=None)
        want = 0 if last_pruning is None else floor_count(units, sparsity_at(last_pruning, 2, 10, 2, 0.75, "exp"))
        assert pruned == want, step
        for n in shapes:
            assert not (masks[n] & ~prev[n]).any()
            assert (store[n]["w"][~masks[n]] == 0).all()  # zero after the optimizer step
            if expected_scores[n] is not None:
                assert np.allclose(pruner.scores[n], expected_scores[n], rtol=1e-12, atol=0)
        prev = {n: m.copy() for n, m in masks.items()}
    assert pruned == floor_count(units, 0.75)
    assert sess.is_done() and pruner.current_sparsity_ratio == pytest.approx(floor_count(units, 0.75) / units)


def test_progressive_prunes_whole_blocks_in_stages_and_reaches_target():
    shapes = {"fc1": (16, 8), "fc2": (8, 16)}
    rng, store = make_store(1, shapes)
    cfg = WeightPruningConfig(pruning_type="magnitude_progressive", pattern="4x1", target_sparsity=0.8,
                              start_step=0, end_step=8, pruning_frequency=4, progressive_steps=4)
    sess = session(cfg, store)
    assert type(sess.pruners[0]).__name__ == "NumpyGlueProgressivePruner"
    counts = []
    for step in range(12):
        before = {n: block_pruned(store[n].get("mask", np.ones(shapes[n], dtype=bool)), 4, 1) for n in shapes}
        train_step(sess, rng, store)
        after = {n: block_pruned(store[n]["mask"], 4, 1) for n in shapes}
        assert all(after[n] >= before[n] for n in shapes)
        for n in shapes:
            assert (store[n]["w"][~store[n]["mask"]] == 0).all()
        counts.append(sum(after.values()))
    units = 64
    # each pruning interval's new blocks arrive over 4 stages; the stage sequence ends at its target
    assert counts[3] == floor_count(units, sparsity_at(0, 0, 8, 4, 0.8))
    assert counts[7] == floor_count(units, sparsity_at(4, 0, 8, 4, 0.8))
    assert counts[8:] == [floor_count(units, 0.8)] * 4  # the last pruning step applies at once
    assert counts[0] < counts[1] < counts[2] < counts[3] < counts[4] <= counts[5] < counts[6] < counts[7]


def test_progressive_stage_sizes_per_layer():
    shapes = {"fc": (32, 4)}
    rng, store = make_store(2, shapes)
    cfg = WeightPruningConfig(pruning_type="magnitude_progressive", pattern="4x1", target_sparsity=0.5,
                              start_step=0, end_step=4, pruning_frequency=4, progressive_steps=4,
                              sparsity_decay_type="linear")
    sess = session(cfg, store)
    seen = []
    for _ in range(5):
        train_step(sess, rng, store)
        seen.append(block_pruned(store["fc"]["mask"], 4, 1))
    # step 0 aims at linear 0.25 of 32 blocks = 8 blocks, pruned 2 per stage; step 4 (last) at 16 blocks
    assert seen == [2, 4, 6, 8, 16]


def test_pattern_lock_keeps_existing_zeros_only():
    shapes = {"fc1": (8, 8), "fc2": (8, 8)}
    rng, store = make_store(3, shapes)
    zeros = {n: rng.random(s) < 0.4 for n, s in shapes.items()}
    for n in shapes:
        store[n]["w"][zeros[n]] = 0.0
    cfg = WeightPruningConfig(pruning_type="pattern_lock", pattern="1x1", start_step=0, end_step=5)
    sess = session(cfg, store)
    sess.on_train_begin()
    for _ in range(6):
        train_step(sess, rng, store)
        for n in shapes:
            assert np.array_equal(store[n]["w"] == 0, zeros[n])
            assert np.array_equal(store[n]["mask"], ~zeros[n])
    p = sess.pruners[0]
    assert not any(p.is_pruning_step(s) for s in range(6)) and p.is_done(0)
    assert p.current_sparsity_ratio == pytest.approx(sum(int(z.sum()) for z in zeros.values()) / 128)


def test_two_groups_with_their_own_patterns_and_schedules():
    shapes = {"fc1": (8, 16), "fc2": (16, 8)}
    rng, store = make_store(4, shapes)
    cfg = WeightPruningConfig([{"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5, "end_step": 0},
                               {"op_names": ["fc2"], "pattern": "1xchannel", "target_sparsity": 0.5,
                                "start_step": 1, "end_step": 3}], pruning_type="magnitude")
    sess = session(cfg, store)
    assert [list(p.modules) for p in sess.pruners] == [["fc1"], ["fc2"]]
    assert sess.layer_patterns() == {"fc1": "2:4", "fc2": "1xchannel"}
    train_step(sess, rng, store)
    assert int((~store["fc1"]["mask"]).sum()) == 64 and "mask" not in store["fc2"]
    for _ in range(3):
        train_step(sess, rng, store)
    g = (~to_2d(store["fc1"]["mask"])).reshape(-1, 4).sum(axis=1)
    assert set(np.unique(g)) == {2}
    rows = (~store["fc2"]["mask"]).all(axis=1)
    assert int(rows.sum()) == 8 and int((~store["fc2"]["mask"]).sum()) == 64
    assert sess.global_step == 4 and sess.is_done()


def test_group_lasso_adds_its_term_to_gradients_in_window():
    shapes = {"fc": (4, 2)}
    rng, store = make_store(5, shapes)
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, start_step=1,
                              end_step=1, reg_type="group_lasso", parameters={"reg_coeff": 0.1})
    sess = session(cfg, store)
    for step in range(3):
        sess.on_step_begin()
        g0 = rng.standard_normal(shapes["fc"])
        store["fc"]["g"] = g0.copy()
        sess.on_before_optimizer_step()
        if step == 1:
            # step 1 is also the pruning step: the term is taken on the freshly masked weight
            w = store["fc"]["w"]
            assert int((w == 0).all(axis=0).sum()) == 1  # one of the two 4x1 blocks pruned
            norms = np.sqrt((w * w).sum(axis=0, keepdims=True))
            want = np.where(norms > 0, 0.1 * w / np.where(norms > 0, norms, 1), 0.0)
            assert np.allclose(store["fc"]["g"] - g0, want, rtol=1e-5, atol=1e-7)
        else:
            assert np.array_equal(store["fc"]["g"], g0)
        sess.on_after_optimizer_step()
        sess.on_step_end()


def test_gradient_criterion_without_gradient_says_what_to_do():
    shapes = {"fc": (4, 4)}
    rng, store = make_store(6, shapes)
    sess = session(WeightPruningConfig(pruning_type="snip", pattern="1x1", target_sparsity=0.5), store)
    sess.on_step_begin()
    with pytest.raises(PruningStateError, match=r"pruning_type='snip' scores weights by their gradients.*layer 'fc'.*"
                                                r"loss.backward\(\)"):
        sess.on_before_optimizer_step()


def test_session_takes_a_dict_config_and_rejects_other_types():
    _, store = make_store(7, {"fc": (4, 4)})
    sess = session({"pruning_type": "magnitude", "pattern": "1x1", "target_sparsity": 0.5}, store)
    assert sess.pruners[0].target_sparsity_ratio == 0.5
    from nc_prune import ConfigTypeError
    with pytest.raises(ConfigTypeError, match="config must be a WeightPruningConfig or a dict"):
        session(["magnitude"], store)


def test_plan_warning_points_at_the_caller():
    layers = [LayerInfo("a", ("Linear",), (8, 4), True), LayerInfo("b", ("Linear",), (6, 4), True),
              LayerInfo("head", ("Linear",), (2, 4), True)]
    with pytest.warns(UserWarning, match="'b'") as rec:
        PruningSession(WeightPruningConfig(pruning_type="magnitude"), layers, lambda plan: {}, NumpyGlue)
    assert rec[0].filename == __file__
