"""Coupled units: one score and one decision for slices of several layers (heads, FFN and conv channels)."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune import compute_masks
from nc_prune.core.coupling import CoupledUnits, Coupling, Slice, check_couplings
from nc_prune.core.errors import PatternShapeError
from nc_prune.core.selection import count_for_ratio


def ffn(name, hidden=4, inner=8):
    return Coupling(f"{name} channels", "channel", inner,
                    (Slice(f"{name}.up", "out"), Slice(f"{name}.gate", "out"), Slice(f"{name}.down", "in")))


def test_a_channel_goes_from_up_gate_and_down_together_and_counts_exactly():
    rng = np.random.default_rng(0)
    scores = {f"b{i}.{p}": rng.random(s) for i in range(2)
              for p, s in (("up", (8, 4)), ("gate", (8, 4)), ("down", (4, 8)))}
    masks = compute_masks(scores, "1xchannel", 0.5, scope="local", couplings=[ffn("b0"), ffn("b1")])
    for b in ("b0", "b1"):
        rows = ~masks[f"{b}.up"].any(1)
        assert rows.sum() == 4
        assert np.array_equal(rows, ~masks[f"{b}.gate"].any(1)) and np.array_equal(rows, ~masks[f"{b}.down"].any(0))
        assert masks[f"{b}.up"][~rows].all() and masks[f"{b}.down"][:, ~rows].all()  # whole units only
    glob = compute_masks(scores, "1xchannel", 0.5, couplings=[ffn("b0"), ffn("b1")])
    pruned = sum(int((~glob[f"b{i}.up"].any(1)).sum()) for i in range(2))
    assert pruned == count_for_ratio(16, 0.5)


def test_unit_scores_reduce_over_every_scored_slice_and_low_units_go_first():
    up = np.array([[1.0] * 4, [9.0] * 4, [2.0] * 4, [8.0] * 4])
    down = np.array([[1.0, 9.0, 9.0, 1.0]] * 3)
    c = Coupling("c", "channel", 4, (Slice("up", "out"), Slice("down", "in")))
    cu = CoupledUnits(c, {"up": up.shape, "down": down.shape})
    assert cu.reduce({"up": up, "down": down}, "sum", None).tolist() == [7.0, 63.0, 35.0, 35.0]
    assert cu.reduce({"up": up, "down": down}, "max", None).tolist() == [1.0, 9.0, 9.0, 8.0]
    assert cu.unit_size == 4 + 3
    masks = compute_masks({"up": up, "down": down}, "1xchannel", 0.25, scope="local", couplings=[c])
    assert (~masks["up"].any(1)).tolist() == [True, False, False, False]


def test_heads_of_a_fused_projection_and_grouped_query_attention():
    # GPT-2 style: c_attn rows hold q, k, v of 2 heads of width 2 at offsets 0, 4, 8; o reads 4 inputs
    head = Coupling("attn heads", "head", 2, (Slice("c_attn", "out", 2, 0), Slice("c_attn", "out", 2, 4),
                                              Slice("c_attn", "out", 2, 8), Slice("o", "in", 2)))
    scores = {"c_attn": np.vstack([np.full((2, 4), 1.0), np.full((2, 4), 5.0)] * 3), "o": np.ones((4, 4))}
    masks = compute_masks(scores, "1xchannel", 0.5, scope="local", couplings=[head])
    assert (~masks["c_attn"].any(1)).tolist() == [True, True, False, False] * 3
    assert (~masks["o"].any(0)).tolist() == [True, True, False, False]
    # GQA: 4 query heads share 2 KV heads; a unit is a KV head with its 2 query heads
    kv = Coupling("gqa", "head", 2, (Slice("q", "out", 2 * 3), Slice("k", "out", 3), Slice("v", "out", 3),
                                     Slice("o", "in", 2 * 3)))
    cu = CoupledUnits(kv, {"q": (12, 8), "k": (6, 8), "v": (6, 8), "o": (8, 12)})
    m = cu.expand(np.array([False, True]))
    assert m["q"][6:].all() and not m["q"][:6].any()  # the KV head's 2 query heads of width 3
    assert m["k"][3:].all() and not m["k"][:3].any() and m["o"][:, 6:].all() and not m["o"][:, :6].any()


def test_a_conv_filter_with_its_consumer_and_earlier_masks_stay():
    f = Coupling("conv filters", "channel", 4, (Slice("c1", "out"), Slice("c2", "in")))
    rng = np.random.default_rng(1)
    scores = {"c1": rng.random((4, 2, 3, 3)), "c2": rng.random((6, 4, 3, 3))}
    pre = {"c1": np.ones((4, 2, 3, 3), bool), "c2": np.ones((6, 4, 3, 3), bool)}
    pre["c1"][3] = False
    pre["c2"][:, 3] = False  # filter 3 pruned before, in both
    masks = compute_masks(scores, "1xchannel", 0.5, scope="local", couplings=[f], pre_masks=pre)
    gone = ~masks["c1"].reshape(4, -1).any(1)
    assert gone[3] and gone.sum() == 2
    assert np.array_equal(gone, ~np.moveaxis(masks["c2"], 1, 0).reshape(4, -1).any(1))


def test_bad_couplings_say_what_is_wrong():
    c = Coupling("c", "channel", 9, (Slice("up", "out"), Slice("down", "in")))
    with pytest.raises(PatternShapeError, match=r"c: layer 'up' with shape \(4, 3\) has 4 rows, fewer than 9 units"):
        CoupledUnits(c, {"up": (4, 3), "down": (2, 9)})
    with pytest.raises(ValueError, match="axis must be one of"):
        Slice("x", "rows")
    assert check_couplings([ffn("b"), ffn("b")]) == []  # the same coupling twice is the same claim
    other = Coupling("other", "channel", 8, (Slice("b.up", "out"),))
    assert check_couplings([ffn("b"), other]) == ["b.up (out) belongs to both b channels and other"]


def test_channel_couplings_join_a_group_only_as_the_config_asks():
    from nc_prune import LayerInfo, WeightPruningConfig
    from nc_prune.core.layers import plan_layers
    layers = [LayerInfo("b.up", ("Linear",), (8, 4), True), LayerInfo("b.down", ("Linear",), (4, 8), True),
              LayerInfo("head", ("Linear",), (2, 4), True)]
    ffn_ = Coupling("b channels", "channel", 8, (Slice("b.up", "out"), Slice("b.down", "in")))
    reader_head = Coupling("head reads", "channel", 4, (Slice("b.down", "out"), Slice("head", "in")))

    def plan(**kw):
        cfg = WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5, **kw)
        p = plan_layers(layers, cfg.groups, [ffn_, reader_head])
        return [l.name for l in p.groups[0]], [c.name for c in p.couplings[0]], p.decisions
    # INC's recipe: channelx1 on the down projection alone brings the up projection in
    names, used, decisions = plan(pattern="channelx1", op_names=["down"])
    assert names == ["b.down", "b.up"] and used == ["b channels"]
    assert decisions["b.up"].group == 0 and decisions["b.up"].reason == "coupled with b channels"
    # a group that selected both sides keeps INC's per-layer channels ...
    assert plan(pattern="channelx1", op_names=["up", "down"])[1] == []
    # ... unless asked, and never without being asked
    assert plan(pattern="channelx1", op_names=["up", "down"], parameters={"coupled": True})[1] == ["b channels"]
    assert plan(pattern="channelx1", op_names=["down"], parameters={"coupled": False})[1] == []
    # the classifier head stays dense by default, as INC leaves it ...
    assert plan(pattern="1xchannel", op_names=["down"])[1] == []
    # ... with coupled=True it joins as a reader (it loses the pruned channels' input columns, its outputs stay) ...
    names, used, decisions = plan(pattern="1xchannel", op_names=["down"], parameters={"coupled": True})
    assert names == ["b.down", "head"] and used == ["head reads"]
    assert decisions["head"].reason == "coupled with head reads"
    # ... but never as a writer of a unit
    head_writes = Coupling("head writes", "channel", 2, (Slice("head", "out"), Slice("b.up", "in", 2)))
    p = plan_layers(layers, WeightPruningConfig(pruning_type="magnitude", target_sparsity=0.5, pattern="channelx1",
                                                op_names=["up"], parameters={"coupled": True}).groups, [head_writes])
    assert p.couplings[0] == [] and p.decisions["head"].group is None
