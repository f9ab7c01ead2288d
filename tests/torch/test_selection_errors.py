"""Which layers are pruned, and the errors a user meets."""

import warnings

import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.core.errors import ConfigError, NoPrunableLayerError
from nc_prune.torch import prepare_pruning

from .conftest import SmallCNN, mlp, train_steps, zeros


class Conv1D(nn.Module):
    """Same storage as transformers' Conv1D: weight (in, out), y = x @ W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class GPTBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = Conv1D(32, 16)  # out 32, in 16
        self.c_proj = Conv1D(16, 32)
        self.lm_head = nn.Linear(16, 8)

    def forward(self, x):
        return self.lm_head(self.c_proj(torch.relu(self.c_fc(x))))


def names(pruning):
    return sorted(n for p in pruning.pruners for n in p.modules)


def test_default_types_take_conv_and_linear_and_leave_the_head():
    assert names(prepare_pruning(SmallCNN(), WeightPruningConfig(pattern="1x1"))) == ["conv1", "conv2", "fc1"]


def test_hf_conv1d_is_pruned_in_the_canonical_layout():
    torch.manual_seed(0)
    model = GPTBlock()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1",
                                                         target_sparsity=0.5, pruning_scope="local"), opt)
    assert names(pruning) == ["c_fc", "c_proj"]
    train_steps(model, opt, 1, in_shape=(4, 16))
    w = model.c_fc.weight.detach().t()  # canonical (out=32, in=16): 4 consecutive OUTPUT features
    blocks = w.reshape(8, 4, 16) == 0
    assert torch.equal(blocks.all(1), blocks.any(1)) and int(blocks.all(1).sum()) == 64


def test_op_names_regex_types_and_exclusions():
    model = SmallCNN()
    cfg = WeightPruningConfig(op_names=["conv", "fc"], excluded_op_names=["conv1$"], pattern="1x1")
    assert names(prepare_pruning(model, cfg)) == ["conv2", "fc1"]
    cfg = WeightPruningConfig(pruning_op_types=["Linear"], pattern="1x1")
    assert names(prepare_pruning(SmallCNN(), cfg)) == ["fc1"]
    cfg = WeightPruningConfig(op_names=["fc2"], pattern="1x1")  # the head, named in full: included
    assert names(prepare_pruning(SmallCNN(), cfg)) == ["fc2"]


def test_groups_get_their_own_pattern_and_target():
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig([{"op_names": ["conv"], "pattern": "4x1", "target_sparsity": 0.5},
                               {"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5}],
                              pruning_type="magnitude")
    pruning = prepare_pruning(model, cfg, opt)
    assert [sorted(p.modules) for p in pruning.pruners] == [["conv1", "conv2"], ["fc1"]]
    train_steps(model, opt, 1, in_shape=(2, 1, 8, 8))
    assert set((model.fc1.weight.reshape(-1, 4) == 0).sum(1).tolist()) == {2}
    assert zeros(model.conv1.weight) + zeros(model.conv2.weight) == (72 + 1152) // 2


def test_selecting_nothing_is_an_error_that_lists_the_layers():
    with pytest.raises(NoPrunableLayerError, match=r"op_names=\['decoder'\].*selects no layer.*conv1 \(Conv2d\)"):
        prepare_pruning(SmallCNN(), WeightPruningConfig(op_names=["decoder"]))


def test_two_groups_claiming_one_layer_is_an_error():
    cfg = WeightPruningConfig([{"op_names": ["conv"]}, {"op_names": ["conv2"]}], pattern="1x1")
    with pytest.raises(ConfigError, match="'conv2' is selected by pruning_configs\\[0\\] and pruning_configs\\[1\\]"):
        prepare_pruning(SmallCNN(), cfg)


def test_unfit_layer_warns_and_stays_dense():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.warns(UserWarning, match=r"layer '0' with weight shape \(6, 8\).*4x1.*left dense"):
        pruning = prepare_pruning(model, WeightPruningConfig(pattern="4x1"))
    assert names(pruning) == ["2"]


def test_no_fitting_layer_is_an_error():
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NoPrunableLayerError, match="none of the selected layers fits pattern '4x1'"):
            prepare_pruning(model, WeightPruningConfig(pattern="4x1"))


def test_optimizer_must_own_the_pruned_weights():
    model = mlp()
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="optimizer does not update the weights of 0"):
        prepare_pruning(model, WeightPruningConfig(), opt)


def test_optimizer_and_dataloader_together_is_an_error():
    model = mlp()
    with pytest.raises(ConfigError, match="not both"):
        prepare_pruning(model, WeightPruningConfig(), torch.optim.SGD(model.parameters(), lr=0.1), dataloader=[])


def test_the_config_the_user_passed_is_not_mutated():
    groups = [{"op_names": ["conv"], "pattern": "4x1"}]
    snapshot = repr(groups)
    cfg = WeightPruningConfig(groups, pruning_op_types=["Conv", "Linear"])
    prepare_pruning(SmallCNN(), cfg)
    assert repr(groups) == snapshot
    assert cfg.to_dict() == WeightPruningConfig(groups, pruning_op_types=["Conv", "Linear"]).to_dict()


def test_config_as_plain_dict_is_accepted():
    pruning = prepare_pruning(mlp(), {"pruning_type": "magnitude", "pattern": "1x1", "target_sparsity": 0.5})
    pruning.prune_now()
    assert pruning.report().total_zeros == 768


def test_default_config_works_end_to_end():
    """INC's defaults (snip_momentum, 4x1, start=end=0) crashed; here they prune at the first step."""
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruning = prepare_pruning(model, WeightPruningConfig(), opt)
    train_steps(model, opt, 2)
    assert pruning.report().total_zeros == int(0.9 * 1536 / 4) * 4
