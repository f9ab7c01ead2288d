"""``pruning_type="retrain_free"``: Fisher-scored heads and FFN channels of a trained model, no retraining."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nc_prune import ConfigError, PruningStateError, WeightPruningConfig
from nc_prune.core.selection import count_for_ratio
from nc_prune.torch import model_slim, prepare_pruning

warnings.filterwarnings("ignore", message=".*token_id must be.*")


class FFNNet(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.up, self.down, self.head = nn.Linear(16, hidden), nn.Linear(hidden, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def trained(seed):
    torch.manual_seed(seed)
    model = FFNNet()
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(seed))
    y = x[:, :3].argmax(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y, [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]


def cfg(ptype="retrain_free", target=0.5, **params):
    return WeightPruningConfig(pruning_type=ptype, pattern="channelx1", target_sparsity=target, op_names=["down"],
                               parameters=params)


def loss_of(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def test_channels_go_from_up_and_down_together_exactly_and_the_fix_lowers_the_layer_error():
    model, x, y, batches = trained(0)
    pruning = prepare_pruning(model, cfg(), dataloader=batches, loss_func=F.cross_entropy)
    dead_cols = (model.down.weight == 0).all(0)
    dead_rows = (model.up.weight == 0).all(1)  # (biases are not masked; slimming removes them with the row)
    assert int(dead_cols.sum()) == count_for_ratio(64, 0.5) and torch.equal(dead_cols, dead_rows)
    assert int((model.down.weight == 0).sum()) == 32 * 16  # nothing else zeroed
    (fix,) = pruning.pruners[0].fixes.values()
    assert fix["units_kept"] == 32 and 0 < fix["error_after"] < fix["error_before"]
    report = model_slim(model)  # whole channels: slimming removes them for real
    assert report.removed == {"channels": 32} and model.down.in_features == 32


def test_weight_fix_none_leaves_the_kept_weights_exactly_as_they_were():
    model, x, y, batches = trained(0)
    before = copy.deepcopy(model)
    prepare_pruning(model, cfg(weight_fix="none"), dataloader=batches, loss_func=F.cross_entropy)
    kept = (model.down.weight != 0).any(0)
    assert torch.equal(model.down.weight[:, kept], before.down.weight[:, kept])
    assert torch.equal(model.up.weight[kept], before.up.weight[kept])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_masks_beat_magnitude_and_the_fix_helps_on_a_trained_model(seed):
    model, x, y, batches = trained(seed)
    losses = {}
    for name, config in [("magnitude", cfg("magnitude")), ("fisher", cfg(weight_fix="none")), ("fixed", cfg())]:
        m = copy.deepcopy(model)
        prepare_pruning(m, config, dataloader=batches, loss_func=F.cross_entropy)
        losses[name] = loss_of(m, x, y)
    assert losses["fixed"] < losses["fisher"] < losses["magnitude"], losses


def test_bad_uses_are_refused_naming_the_fix():
    model, x, y, batches = trained(0)
    with pytest.raises(ConfigError, match=r"retrain_free' removes whole channels or heads: .* pattern '4x1' is not"):
        WeightPruningConfig(pruning_type="retrain_free", pattern="4x1", target_sparsity=0.5)
    with pytest.raises(ConfigError, match=r"weight_fix"):
        cfg(weight_fix="lsq")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"pruning_type='retrain_free'\) prunes a trained model at once"):
        prepare_pruning(model, cfg(), optimizer)
    with pytest.raises(ConfigError, match="scores weights by their gradients; pass a dataloader"):
        prepare_pruning(model, cfg()).prune_now()
    frozen = copy.deepcopy(model)
    frozen.down.weight.requires_grad_(False)
    with pytest.raises(PruningStateError, match=r"layer 'down' had no gradient in any batch: .*requires_grad=False"):
        prepare_pruning(frozen, cfg(), dataloader=batches, loss_func=F.cross_entropy)


def test_heads_and_ffn_channels_of_a_transformer_from_its_own_loss():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, num_labels=3))
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, 100, (4, 8), generator=g), "labels": torch.randint(0, 3, (4,), generator=g)}
               for _ in range(4)]
    config = WeightPruningConfig([
        {"pruning_type": "retrain_free", "pattern": "mha", "target_sparsity": 0.5, "op_names": ["attention"]},
        {"pruning_type": "retrain_free", "pattern": "channelx1", "target_sparsity": 0.25,
         "op_names": [r"layer\.\d+\.output\.dense"]}])
    pruning = prepare_pruning(model, config, dataloader=batches)  # transformers' loss from the labels
    for i in range(2):
        o = model.bert.encoder.layer[i].attention.output.dense.weight
        q = model.bert.encoder.layer[i].attention.self.query.weight
        dead_heads = (o == 0).reshape(32, 4, 8).all(-1).all(0)
        assert torch.equal(dead_heads, (q == 0).reshape(4, 8, 32).all(-1).all(-1))
    assert sum(int((model.bert.encoder.layer[i].output.dense.weight == 0).all(0).sum())
               for i in range(2)) == 32  # 25 % of 2 x 64 channels, ranked globally (the default scope)
    assert sum(int((model.bert.encoder.layer[i].attention.output.dense.weight == 0).reshape(32, 4, 8).all(-1)
                   .all(0).sum()) for i in range(2)) == 4  # half of the 8 heads, ranked globally
    assert len(pruning.pruners[0].fixes) == 2 and len(pruning.pruners[1].fixes) == 2
    report = model_slim(model)
    assert report.removed == {"heads": 4, "channels": 32}
