"""Models as users bring them: small transformers models built from configs, and a ResNet-18-style CNN.

Frozen layers, tied heads, channel targets in global scope, HF-style batches and wrapped models, each
checked with exact counts (a trial of real architectures found each of these wrong).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nc_prune import ConfigError, WeightPruningConfig
from nc_prune.core.selection import count_for_ratio
from nc_prune.torch import prepare_pruning

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")


def bert(num_labels=3):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, num_labels=num_labels))


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                                                n_positions=64, bos_token_id=0, eos_token_id=0))


def opt():
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100,
        word_embed_proj_dim=32, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=1))


def llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0))


def tokens(n=4, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(2, 100, (n, length), generator=g),
            "attention_mask": torch.ones(n, length, dtype=torch.long)}


def zeros(t):
    return int((t == 0).sum())


# ---- 1. frozen layers ---------------------------------------------------------------------------
def test_a_frozen_backbone_is_left_dense_and_the_usual_fine_tuning_optimizer_just_works():
    model = bert()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    for p in model.bert.encoder.layer[0].parameters():
        p.requires_grad_(False)
    frozen = {n: m.weight.detach().clone() for n, m in model.named_modules()
              if n.startswith("bert.encoder.layer.0.") and isinstance(m, nn.Linear)}
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=1e-3)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, start_step=0,
                              end_step=2, pruning_frequency=1)
    pruning = prepare_pruning(model, cfg, optimizer)
    for step in range(3):
        batch = dict(tokens(seed=step), labels=torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    pruned = {n for p in pruning.pruners for n in p.modules}
    assert pruned == {f"bert.encoder.layer.1.{x}" for x in ("attention.self.query", "attention.self.key",
                                                            "attention.self.value", "attention.output.dense",
                                                            "intermediate.dense", "output.dense")} | {"bert.pooler.dense"}
    for name, w in frozen.items():
        assert torch.equal(model.get_submodule(name).weight, w), name  # untouched, not zeroed
    report = pruning.report()
    assert report["bert.encoder.layer.0.attention.self.query"].note == "frozen"
    assert report["classifier"].note == "classifier head"
    total = sum(report[n].params for n in pruned)
    assert sum(report[n].zeros for n in pruned) == 4 * count_for_ratio(total // 4, 0.5)


def test_magnitude_one_shot_leaves_frozen_weights_alone_unless_named():
    model = bert()
    model.bert.encoder.layer[0].intermediate.dense.weight.requires_grad_(False)
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1",
                                                         target_sparsity=0.5), dataloader=[tokens()])
    assert zeros(model.bert.encoder.layer[0].intermediate.dense.weight) == 0
    assert "bert.encoder.layer.0.intermediate.dense" not in pruning.masks
    named = r"bert\.encoder\.layer\.0\.intermediate\.dense"
    model = bert()
    model.bert.encoder.layer[0].intermediate.dense.weight.requires_grad_(False)
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1", target_sparsity=0.5,
                                               op_names=[named], pruning_scope="local"), dataloader=[tokens()])
    assert zeros(model.bert.encoder.layer[0].intermediate.dense.weight) == 32 * 64 // 2


# ---- 2. tied heads --------------------------------------------------------------------------------
@pytest.mark.parametrize("make, head, embedding", [(gpt2, "lm_head", "transformer.wte.weight"),
                                                   (opt, "lm_head", "model.decoder.embed_tokens.weight")])
def test_a_tied_head_is_left_out_with_a_warning_naming_both_owners(make, head, embedding):
    model = make()
    emb = model.get_submodule(embedding.rsplit(".", 1)[0]).weight.detach().clone()
    with pytest.warns(UserWarning, match=rf"layer '{head}' is left dense: its weight shared with {embedding}"):
        pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1",
                                                             target_sparsity=0.5, op_names=[".*"]),
                                  dataloader=[tokens()])
    assert head not in pruning.masks and len(pruning.masks) > 0
    assert torch.equal(model.get_submodule(embedding.rsplit(".", 1)[0]).weight, emb)  # the embedding is intact
    # named on purpose, it is pruned once — and the embedding with it, as asked
    model = make()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1x1",
                                                         target_sparsity=0.5, op_names=[head]),
                              dataloader=[tokens()])
    assert list(pruning.masks) == [head]
    assert zeros(model.get_submodule(embedding.rsplit(".", 1)[0]).weight) == 100 * 32 // 2


# ---- 3. channel targets are fractions of the weights ----------------------------------------------
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18ish(nn.Module):
    """ResNet-18's layout (stem, four stages of two basic blocks, 64..512 channels) at 1/8 of the width."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        chans = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], width
        for i, c in enumerate(chans):
            layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        return self.fc(self.layers(x).mean((2, 3)))


def test_a_global_channel_target_is_a_fraction_of_the_weights_exact_to_one_unit():
    torch.manual_seed(0)
    model = ResNet18ish()
    cfg = dict(pruning_type="magnitude", pattern="1xchannel", target_sparsity=0.75,
               parameters={"coupled": False})  # filters alone (coupled units: tests/torch/test_slim.py)
    pruning = prepare_pruning(model, WeightPruningConfig(**cfg), dataloader=[torch.randn(2, 3, 32, 32)])
    report = pruning.report()
    rows = [r for r in report.rows if r.pattern == "1xchannel"]
    weights, pruned = sum(r.params for r in rows), sum(r.zeros for r in rows)
    longest = max(r.params // r.shape[0] for r in rows)
    assert 0 <= count_for_ratio(weights, 0.75) - pruned < longest  # 75 % of the weights, short by < one filter
    assert 0.74 < pruned / weights <= 0.75
    assert sum(r.pruned_units for r in rows) / sum(r.units for r in rows) < 0.75  # long filters go first
    # INC's unit counting on request: 75 % of the filters, which is far more than 75 % of the weights
    torch.manual_seed(0)
    model = ResNet18ish()
    pruning = prepare_pruning(model, WeightPruningConfig(**cfg, global_target="units"),
                              dataloader=[torch.randn(2, 3, 32, 32)])
    rows = [r for r in pruning.report().rows if r.pattern == "1xchannel"]
    assert sum(r.pruned_units for r in rows) == count_for_ratio(sum(r.units for r in rows), 0.75)
    assert sum(r.zeros for r in rows) / weights > 0.85


def test_channelx1_on_grouped_query_attention_counts_weights_across_q_and_the_smaller_k_v():
    model = llama()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="channelx1",
                                                         target_sparsity=0.5, op_names=["self_attn"]),
                              dataloader=[tokens()])
    rows = [r for r in pruning.report().rows if r.pattern == "channelx1"]
    assert {r.shape for r in rows} == {(32, 32), (16, 32)}  # q/o and the grouped k/v
    weights, pruned = sum(r.params for r in rows), sum(r.zeros for r in rows)
    assert 0 <= count_for_ratio(weights, 0.5) - pruned < 32


# ---- 4. HF-style batches for one-shot gradient scores ---------------------------------------------
def test_one_shot_gradient_scores_take_tokenizer_dict_and_target_pairs():
    model = bert()
    batches = [(tokens(seed=i), torch.tensor([0, 1, 2, 1])) for i in range(2)]
    cfg = WeightPruningConfig(pruning_type="snip", pattern="4x1", target_sparsity=0.5)
    pruning = prepare_pruning(model, cfg, dataloader=batches,
                              loss_func=lambda out, y: nn.functional.cross_entropy(out.logits, y))
    assert sum(int((~m).sum()) for m in pruning.masks.values()) == 4 * count_for_ratio(
        sum(m.numel() for m in pruning.masks.values()) // 4, 0.5)
    # a dict with labels: the model's own loss
    model = bert()
    pruning = prepare_pruning(model, cfg, dataloader=[dict(tokens(), labels=torch.tensor([0, 1, 2, 1]))])
    assert sum(int((~m).sum()) for m in pruning.masks.values()) > 0


def test_a_batch_the_model_rejects_names_the_structure_it_saw():
    model = bert()
    cfg = WeightPruningConfig(pruning_type="snip", pattern="4x1", target_sparsity=0.5)
    with pytest.raises(ConfigError, match=r"the model rejected a batch of structure tuple\(Tensor\[4, 8\] int64, "
                                          r"Tensor\[4\] int64, Tensor\[4\] int64\)|is ambiguous"):
        prepare_pruning(model, cfg, dataloader=[(tokens()["input_ids"], torch.zeros(4, dtype=torch.long),
                                                 torch.zeros(4, dtype=torch.long))])
    with pytest.raises(ConfigError, match=r"needs a loss.*dict\(input_ids: Tensor\[4, 8\] int64"):
        prepare_pruning(bert(), cfg, dataloader=[tokens()])
    with pytest.raises(ConfigError, match="the dataloader gave no batch"):
        prepare_pruning(bert(), cfg, dataloader=[])


# ---- 8. wrapped models keep the inner model's layer names ------------------------------------------
def test_a_compiled_model_is_named_as_the_model_inside():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    compiled = torch.compile(model)
    opt_ = torch.optim.SGD(compiled.parameters(), lr=0.1)
    pruning = prepare_pruning(compiled, WeightPruningConfig(pruning_type="magnitude", pattern="4x1",
                                                            target_sparsity=0.5, op_names=["^0$"]), opt_)
    assert list(pruning.masks) == ["0"]
    assert "_orig_mod.nc_prune_step" in compiled.state_dict() and "nc_prune_step" in model.state_dict()
