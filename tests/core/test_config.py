"""WeightPruningConfig: INC keys and defaults, group merging, strict validation, round-trips."""

from __future__ import annotations

import copy
import re

import pytest

from nc_prune import DEFAULTS, ConfigError, ConfigTypeError, WeightPruningConfig
from nc_prune.core.pruner import get_pruner_class
from nc_prune.core.patterns import PatternNxM, get_pattern
from nc_prune.core.schedulers import OneshotScheduler, get_scheduler

INC_DEFAULTS = {
    "target_sparsity": 0.9,
    "pruning_type": "snip_momentum",
    "pattern": "4x1",
    "op_names": [],
    "excluded_op_names": [],
    "start_step": 0,
    "end_step": 0,
    "pruning_scope": "global",
    "pruning_frequency": 1,
    "min_sparsity_ratio_per_op": 0.0,
    "max_sparsity_ratio_per_op": 0.98,
    "sparsity_decay_type": "exp",
    "pruning_op_types": ["Conv", "Linear"],
    "low_memory_usage": False,
}


def test_inc_keys_and_defaults():
    for key, value in INC_DEFAULTS.items():
        assert DEFAULTS[key] == value, key
    assert DEFAULTS["criterion_reduce_type"] == "mean"
    assert DEFAULTS["reg_type"] is None
    assert DEFAULTS["parameters"] == {"reg_coeff": 0.0}
    cfg = WeightPruningConfig()
    assert len(cfg.groups) == 1
    assert cfg.groups[0] == DEFAULTS
    # globals are readable as attributes, as in INC
    assert cfg.target_sparsity == 0.9
    assert cfg.pattern == "4x1"
    assert cfg.pruning_op_types == ["Conv", "Linear"]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        cfg.nonsense  # noqa: B018


def test_group_keys_override_globals_missing_keys_come_from_globals():
    cfg = WeightPruningConfig(
        [{"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5},
         {"op_names": ["conv"], "pruning_scope": "local"}],
        pruning_type="magnitude", target_sparsity=0.7, start_step=2, end_step=10)
    g0, g1 = cfg.groups
    assert g0["pattern"] == "2:4" and g0["target_sparsity"] == 0.5 and g0["op_names"] == ["fc1"]
    assert g0["pruning_type"] == "magnitude" and g0["start_step"] == 2 and g0["end_step"] == 10
    assert g0["pruning_scope"] == "global"  # default
    assert g1["pattern"] == "4x1" and g1["target_sparsity"] == 0.7 and g1["pruning_scope"] == "local"
    assert g1["pruning_type"] == "magnitude"
    # every key resolved, nothing else
    assert set(g0) == set(DEFAULTS) == set(g1)
    # pruning_configs exposes the groups as given
    assert cfg.pruning_configs == [{"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5},
                                   {"op_names": ["conv"], "pruning_scope": "local"}]


def test_defaults_build_a_pruner():
    """INC crashed on its own defaults (snip_momentum with start_step == end_step == 0)."""
    group = WeightPruningConfig().groups[0]
    sched = get_scheduler(group)
    assert isinstance(sched, OneshotScheduler)
    assert sched.is_pruning_step(0) and not sched.is_pruning_step(1)
    assert sched.update_sparsity_ratio(0) == 0.9
    pat = get_pattern(group)
    assert isinstance(pat, PatternNxM) and pat.block_size == [4, 1]
    cls = get_pruner_class(group)
    pruner = cls(group, {})
    assert pruner.criterion.needs_grad and pruner.target_sparsity_ratio == 0.9


def _error(exc_type, **kw):
    with pytest.raises(exc_type) as info:
        WeightPruningConfig(**kw)
    return str(info.value)


def test_unknown_key_names_key_and_close_match():
    msg = _error(ConfigError, targt_sparsity=0.5)
    assert "'targt_sparsity'" in msg and "did you mean 'target_sparsity'" in msg
    with pytest.raises(ConfigError, match=r"pruning_configs\[1\]: unknown key 'patern'.*'pattern'"):
        WeightPruningConfig([{}, {"patern": "4x1"}])


@pytest.mark.parametrize("kw, words", [
    (dict(target_sparsity=1.0), ["target_sparsity", "1.0"]),
    (dict(target_sparsity=-0.1), ["target_sparsity", "-0.1"]),
    (dict(target_sparsity=float("nan")), ["target_sparsity", "nan"]),
    (dict(min_sparsity_ratio_per_op=0.5, max_sparsity_ratio_per_op=0.4),
     ["min_sparsity_ratio_per_op=0.5", "max_sparsity_ratio_per_op=0.4"]),
    (dict(max_sparsity_ratio_per_op=1.5), ["max_sparsity_ratio_per_op", "1.5"]),
    (dict(start_step=5, end_step=2), ["end_step=2", "start_step=5"]),
    (dict(start_step=-1), ["start_step=-1"]),
    (dict(pruning_frequency=0), ["pruning_frequency=0"]),
    (dict(progressive_steps=0), ["progressive_steps=0"]),
    (dict(pruning_scope="globl"), ["pruning_scope", "'globl'", "did you mean 'global'"]),
    (dict(sparsity_decay_type="lin"), ["sparsity_decay_type", "'lin'"]),
    (dict(criterion_reduce_type="median"), ["criterion_reduce_type", "'median'"]),
    (dict(pruning_type="snip_momentun"), ["pruning_type", "'snip_momentun'", "did you mean 'snip_momentum'"]),
    (dict(reg_type="lasso"), ["reg_type", "'lasso'"]),
    (dict(op_names=["fc("]), ["op_names", "'fc('", "regular expression"]),
    (dict(excluded_op_names=["[a"]), ["excluded_op_names", "'[a'"]),
    (dict(pattern="4x"), ["pattern", "'4x'"]),
    (dict(pattern="0x1"), ["pattern", "'0x1'", "at least 1"]),
    (dict(pattern="4:2"), ["pattern", "'4:2'", "N=4, M=2"]),
    (dict(pattern="4:4"), ["pattern", "'4:4'"]),
    (dict(pattern="channelxchannel"), ["channelxchannel", "'1xchannel'", "'channelx1'"]),
    (dict(pattern="04x1"), ["'04x1'", "write '4x1'"]),
    (dict(pattern="2:4", target_sparsity=0.6), ["target_sparsity=0.6", "'2:4'", "0.5"]),
    (dict(pattern="1:4", target_sparsity=0.3), ["target_sparsity=0.3", "'1:4'", "0.25"]),
    (dict(parameters={"reg_coeff": -1.0}), ["reg_coeff", "-1.0"]),
])
def test_out_of_range_values_name_key_and_value(kw, words):
    msg = _error(ConfigError, **kw)
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("kw, words", [
    (dict(pruning_op_types="Linear"), ["pruning_op_types", "'Linear'", "pruning_op_types=['Linear']"]),
    (dict(op_names="fc1"), ["op_names", "op_names=['fc1']"]),
    (dict(op_names=["fc1", 3]), ["op_names", "3"]),
    (dict(start_step=True), ["start_step", "bool", "True"]),
    (dict(start_step=1.5), ["start_step", "float", "1.5"]),
    (dict(end_step="10"), ["end_step", "'10'"]),
    (dict(target_sparsity="0.5"), ["target_sparsity", "'0.5'"]),
    (dict(target_sparsity=True), ["target_sparsity", "True"]),
    (dict(low_memory_usage=1), ["low_memory_usage", "1"]),
    (dict(pattern=4), ["pattern", "4"]),
    (dict(pruning_type=3), ["pruning_type", "3"]),
    (dict(parameters=0.1), ["parameters", "0.1"]),
])
def test_wrong_types_name_key_and_value(kw, words):
    msg = _error(ConfigTypeError, **kw)
    for w in words:
        assert w in msg, (w, msg)


def test_errors_are_builtin_subclasses():
    with pytest.raises(ValueError):
        WeightPruningConfig(target_sparsity=2.0)
    with pytest.raises(TypeError):
        WeightPruningConfig(pruning_op_types="Conv")


def test_group_errors_name_the_group():
    with pytest.raises(ConfigError, match=r"^pruning_configs\[1\]: pattern '4:2'"):
        WeightPruningConfig([{"pattern": "4x1"}, {"pattern": "4:2"}])
    with pytest.raises(ConfigError, match=r"pruning_configs\[0\]: target_sparsity=0.9 .*'2:4'"):
        WeightPruningConfig([{"pattern": "2:4"}])
    with pytest.raises(ConfigError, match=r"pruning_configs\[1\]: end_step=1 is before start_step=3"):
        WeightPruningConfig([{}, {"start_step": 3, "end_step": 1}])
    with pytest.raises(ConfigTypeError, match=r"pruning_configs\[0\] must be a dict"):
        WeightPruningConfig(["4x1"])


def test_pruning_configs_shapes():
    with pytest.raises(ConfigError, match="empty list"):
        WeightPruningConfig([])
    with pytest.raises(ConfigTypeError, match="must be a list of dicts.*got dict"):
        WeightPruningConfig({"pattern": "4x1"})
    with pytest.raises(ConfigTypeError, match="got str"):
        WeightPruningConfig("4x1")
    assert len(WeightPruningConfig(({"pattern": "1x1"},)).groups) == 1  # a tuple is fine


def test_nothing_passed_is_mutated():
    groups = [{"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5, "parameters": {"reg_coeff": 1}},
              {"op_names": ["conv"], "excluded_op_names": ["x"], "pruning_op_types": ["Conv"]}]
    op_types = ["Linear"]
    params = {"reg_coeff": 0.01}
    before = copy.deepcopy((groups, op_types, params))
    cfg = WeightPruningConfig(groups, pruning_op_types=op_types, parameters=params, pruning_type="magnitude")
    assert (groups, op_types, params) == before
    # parameters is normalised (reg_coeff to float) inside the config only
    assert cfg.groups[0]["parameters"] == {"reg_coeff": 1.0}
    # the config does not alias what was passed
    op_types.append("Conv")
    groups[0]["op_names"].append("fc2")
    params["reg_coeff"] = 5.0
    assert cfg.groups[1]["pruning_op_types"] == ["Conv"]
    assert cfg.groups[0]["pruning_op_types"] == ["Linear"]
    assert cfg.groups[0]["op_names"] == ["fc1"]
    assert cfg.groups[1]["parameters"] == {"reg_coeff": 0.01}
    # what the config hands out does not alias its state
    cfg.groups[0]["op_names"].append("zzz")
    cfg.pruning_configs[0]["op_names"].append("zzz")
    cfg.op_names.append("zzz")
    cfg.to_dict()["pruning_configs"][0]["op_names"].append("zzz")
    assert cfg.groups[0]["op_names"] == ["fc1"] and cfg.op_names == []


def test_no_shared_mutable_defaults_between_configs():
    """INC's class-level ``pruning_configs=[{}]`` leaked one config's groups into the next."""
    a = WeightPruningConfig()
    b = WeightPruningConfig()
    a.groups[0]["op_names"].append("leak")
    a.pruning_configs.append({"pattern": "1x1"})
    assert b.groups[0]["op_names"] == [] and len(b.groups) == 1
    assert a.groups[0]["pruning_op_types"] is not b.groups[0]["pruning_op_types"]
    assert DEFAULTS["op_names"] == [] and DEFAULTS["pruning_op_types"] == ["Conv", "Linear"]
    c = WeightPruningConfig(op_names=["fc"])
    d = WeightPruningConfig()
    assert c.groups[0]["op_names"] == ["fc"] and d.groups[0]["op_names"] == []
    assert DEFAULTS["op_names"] == []


@pytest.mark.parametrize("cfg", [
    WeightPruningConfig(),
    WeightPruningConfig(target_sparsity=0.5, pattern="2:4", pruning_type="magnitude_progressive",
                        start_step=1, end_step=9, pruning_frequency=2, sparsity_decay_type="cube"),
    WeightPruningConfig([{"op_names": ["fc1"], "pattern": "1xchannel", "reg_type": "group_lasso",
                          "parameters": {"reg_coeff": 0.001}},
                         {"op_names": ["conv.*"], "pattern": "channelx1", "pruning_scope": "local",
                          "excluded_op_names": ["conv3"]}],
                        target_sparsity=0.8, min_sparsity_ratio_per_op=0.1),
])
def test_dict_and_json_round_trip(cfg):
    assert WeightPruningConfig.from_dict(cfg.to_dict()) == cfg
    text = cfg.to_json()
    back = WeightPruningConfig.from_json(text)
    assert back == cfg and back.groups == cfg.groups
    assert back.to_json() == text


def test_equality_is_on_resolved_groups():
    assert WeightPruningConfig(target_sparsity=0.9) == WeightPruningConfig()
    assert WeightPruningConfig([{"target_sparsity": 0.5}]) == WeightPruningConfig(target_sparsity=0.5)
    assert WeightPruningConfig(target_sparsity=0.5) != WeightPruningConfig(target_sparsity=0.6)
    assert WeightPruningConfig().__eq__("cfg") is NotImplemented


def test_from_dict_rejects_non_dicts():
    with pytest.raises(ConfigTypeError, match="from_dict needs a dict, got list"):
        WeightPruningConfig.from_dict([1, 2])
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        WeightPruningConfig.from_json('{"bogus": 1}')


def test_n_m_target_at_the_limit_is_allowed():
    assert WeightPruningConfig(pattern="2:4", target_sparsity=0.5).groups[0]["target_sparsity"] == 0.5
    assert WeightPruningConfig(pattern="1:3", target_sparsity=1 / 3).groups[0]["pattern"] == "1:3"


def test_repr_mentions_keys():
    text = repr(WeightPruningConfig(target_sparsity=0.5))
    assert re.search(r"'target_sparsity': 0\.5", text)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    np = pytest.importorskip("numpy")
    cfg = WeightPruningConfig(target_sparsity=np.float32(0.5), end_step=np.int64(10), pruning_frequency=np.int32(2))
    g = cfg.groups[0]
    assert (g["target_sparsity"], g["end_step"], g["pruning_frequency"]) == (0.5, 10, 2)
    assert type(g["target_sparsity"]) is float and type(g["end_step"]) is int and type(g["pruning_frequency"]) is int
    assert WeightPruningConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigTypeError, match="start_step must be an integer, got bool"):
        WeightPruningConfig(start_step=np.bool_(True))
    with pytest.raises(ConfigTypeError, match="start_step must be an integer, got float64"):
        WeightPruningConfig(start_step=np.float64(2.0))


# ---- parameters: declared keys, INC's flat reg_coeff -------------------------------------------
def test_a_typo_in_parameters_is_an_error_not_a_silent_switch_off():
    msg = _error(ConfigError, reg_type="group_lasso", parameters={"reg_coef": 0.1})
    assert "unknown key 'reg_coef'" in msg and "did you mean 'reg_coeff'" in msg
    assert "regularizer 'group_lasso'" in msg and "PARAMETERS" in msg
    with pytest.raises(ConfigError, match=r"pruning_configs\[1\]: parameters has the unknown key 'alpha'"):
        WeightPruningConfig([{}, {"parameters": {"alpha": 1}}])


@pytest.mark.parametrize("value, exc", [(float("inf"), ConfigError), (float("nan"), ConfigError),
                                        (-1e-3, ConfigError), (True, ConfigTypeError), ("0.1", ConfigTypeError)])
def test_reg_coeff_must_be_a_finite_non_negative_number(value, exc):
    msg = _error(exc, reg_type="group_lasso", parameters={"reg_coeff": value})
    assert "parameters['reg_coeff']" in msg and repr(value) in msg


def test_flat_reg_coeff_is_read_as_inc_reads_it():
    cfg = WeightPruningConfig(reg_type="group_lasso", reg_coeff=0.25)
    assert cfg.groups[0]["parameters"] == {"reg_coeff": 0.25}
    group = WeightPruningConfig([{"reg_coeff": 0.5}], reg_type="group_lasso").groups[0]
    assert group["parameters"]["reg_coeff"] == 0.5
    assert WeightPruningConfig(reg_coeff=0.1, parameters={"reg_coeff": 0.1}).groups[0]["parameters"] == {"reg_coeff": 0.1}
    msg = _error(ConfigError, reg_coeff=0.1, parameters={"reg_coeff": 0.2})
    assert "reg_coeff=0.1" in msg and "parameters['reg_coeff']=0.2" in msg and "disagree" in msg
    assert "inf" in _error(ConfigError, reg_coeff=float("inf"))
    # it round-trips as the parameters it stands for
    assert WeightPruningConfig.from_dict(cfg.to_dict()) == cfg


def test_parameters_merge_key_by_key_and_carry_declared_defaults():
    from nc_prune import register_pruner
    from nc_prune.core.parameters import Param, number
    from nc_prune.core.pruner import BasicPruner
    from nc_prune.core.registry import PRUNERS

    @register_pruner("weighted_test")
    class Weighted(BasicPruner):
        PARAMETERS = {"alpha": Param(0.5, number(0.0, 1.0), "mixing weight")}

    try:
        cfg = WeightPruningConfig([{"pruning_type": "weighted_test", "parameters": {"alpha": 0.75}},
                                   {"pruning_type": "weighted_test", "reg_coeff": 0.0}],
                                  parameters={"reg_coeff": 0.0, "alpha": 0.25})
        assert [g["parameters"] for g in cfg.groups] == [{"reg_coeff": 0.0, "alpha": 0.75},
                                                         {"reg_coeff": 0.0, "alpha": 0.25}]
        assert WeightPruningConfig(pruning_type="weighted_test").groups[0]["parameters"]["alpha"] == 0.5
        msg = _error(ConfigError, pruning_type="weighted_test", parameters={"alpha": 2})
        assert "parameters['alpha']=2" in msg and "[0.0, 1.0]" in msg
        # the key belongs to that pruner only
        assert "unknown key 'alpha'" in _error(ConfigError, pruning_type="magnitude", parameters={"alpha": 0.5})
    finally:
        PRUNERS.unregister("weighted_test")


def test_pattern_lock_ignores_the_target_so_an_inherited_one_above_n_over_m_is_fine():
    cfg = WeightPruningConfig([{"pruning_type": "pattern_lock", "pattern": "2:4"}], target_sparsity=0.9)
    assert cfg.groups[0]["pattern"] == "2:4" and cfg.groups[0]["target_sparsity"] == 0.9
    assert "0.9" in _error(ConfigError, pruning_type="magnitude", pattern="2:4", target_sparsity=0.9)


# ---- one spelling rule for patterns ------------------------------------------------------------
@pytest.mark.parametrize("loose, meant", [(" 4x1 ", "4x1"), ("4x1\n", "4x1"), ("04x1", "4x1"), ("4X1", "4x1"),
                                          ("\uff14x1", "4x1"), ("\u0664x1", "4x1"), ("2 : 4", "2:4"),
                                          ("02:4", "2:4"), ("1 xchannel", "1xchannel")])
def test_loosely_written_patterns_are_refused_with_the_exact_spelling(loose, meant):
    msg = _error(ConfigError, pattern=loose, target_sparsity=0.5)
    assert repr(loose) in msg and f"write {meant!r}" in msg
    WeightPruningConfig(pattern=meant, target_sparsity=0.5)  # the spelling named is accepted


def test_multi_channel_patterns_are_accepted_as_inc_does():
    assert get_pattern({"pattern": "2xchannel"}).block_size == [2, "channel"]
    assert get_pattern({"pattern": "channelx4"}).block_size == ["channel", 4]
