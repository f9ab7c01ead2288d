"""Heads and FFN channels pruned as units spanning layers (couplings), in transformers models and nn.MHA."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nc_prune import ConfigError, NoPrunableLayerError, WeightPruningConfig
from nc_prune.core.selection import count_for_ratio
from nc_prune.torch import prepare_pruning
from nc_prune.torch.structure import find_attention, find_ffns
from nc_prune.torch.layers import find_targets

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")


def llama(kv=2):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv,
        vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0))


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                                                n_positions=64, bos_token_id=0, eos_token_id=0))


def opt():
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
        word_embed_proj_dim=32, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=1))


def bert():
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, num_labels=3))


def tokens(n=2, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(2, 100, (2, length), generator=g)} for _ in range(n)]


def canonical(model, name):
    m = model.get_submodule(name)
    return m.weight.t() if type(m).__name__ == "Conv1D" else m.weight


ATTN = {"llama": ["model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.k_proj",
                  "model.layers.{i}.self_attn.v_proj", "model.layers.{i}.self_attn.o_proj"],
        "opt": ["model.decoder.layers.{i}.self_attn.q_proj", "model.decoder.layers.{i}.self_attn.k_proj",
                "model.decoder.layers.{i}.self_attn.v_proj", "model.decoder.layers.{i}.self_attn.out_proj"],
        "bert": ["bert.encoder.layer.{i}.attention.self.query", "bert.encoder.layer.{i}.attention.self.key",
                 "bert.encoder.layer.{i}.attention.self.value", "bert.encoder.layer.{i}.attention.output.dense"]}


def test_attention_and_ffns_are_found_in_each_architecture():
    for make, heads, kv, ffn, inner in ((llama, 4, 2, ("gate_proj", "up_proj"), 64), (gpt2, 4, 4, ("c_fc",), 128),
                                        (opt, 4, 4, ("fc1",), 64), (bert, 4, 4, ("intermediate.dense",), 64)):
        model = make()
        _, targets = find_targets(model)
        attention = find_attention(model, targets)
        assert len(attention) == 2 and {(a.heads, a.kv_heads, a.head_dim) for a in attention} == {(4, kv, 8)}
        ffns = find_ffns(model, targets, attention)
        assert len(ffns) == 2 and all(f.inner == inner and [u.rsplit(".", 1)[-1] for u in f.up] ==
                                      [x.rsplit(".", 1)[-1] for x in ffn] for f in ffns)


def _heads_gone(model, names, head_dim, rows=True):
    w = canonical(model, names)
    view = w if rows else w.t()
    return (view == 0).all(1).reshape(-1, head_dim).all(1)


@pytest.mark.parametrize("arch", ["llama", "opt", "bert"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_heads_go_whole_from_q_k_v_and_o_during_training(arch, scope):
    model = {"llama": llama, "opt": opt, "bert": bert}[arch]()
    opt_ = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="mha", target_sparsity=0.5, start_step=1,
                              end_step=3, pruning_frequency=1, pruning_scope=scope, op_names=["attn|attention"])
    pruning = prepare_pruning(model, cfg, opt_)
    for step in range(4):
        batch = tokens(1, seed=step)[0]
        out = model(**batch, labels=torch.tensor([0, 1]) if arch == "bert" else batch["input_ids"])
        opt_.zero_grad()
        out.loss.backward()
        opt_.step()
    pruned_units = 0
    for i in range(2):
        q, k, v, o = (n.format(i=i) for n in ATTN[arch])
        group = 2 if arch == "llama" else 1  # GQA: a KV head takes its 2 query heads
        gone_kv = _heads_gone(model, k, 8)
        gone_q = _heads_gone(model, q, 8 * group)
        gone_o = _heads_gone(model, o, 8 * group, rows=False)
        assert torch.equal(gone_kv, gone_q) and torch.equal(gone_q, gone_o), (q, gone_q, gone_kv, gone_o)
        assert torch.equal(_heads_gone(model, v, 8), gone_kv)
        for n in (q, k, v, o):  # whole heads only: nothing else is zero
            w = canonical(model, n)
            assert int((w == 0).sum()) == int(gone_kv.sum()) * w.numel() // len(gone_kv)
        pruned_units += int(gone_kv.sum())
        if scope == "local":
            assert int(gone_kv.sum()) == count_for_ratio(len(gone_kv), 0.5)
    units = 2 * (2 if arch == "llama" else 4)
    assert pruned_units == count_for_ratio(units, 0.5)
    assert "mha" in str(pruning.report())


def test_gpt2_fused_c_attn_heads_and_query_heads_within_kv_groups():
    model = gpt2()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="mha", target_sparsity=0.5,
                                                         pruning_scope="local", op_names=["attn"]),
                              dataloader=tokens(1))
    for i in range(2):
        qkv = canonical(model, f"transformer.h.{i}.attn.c_attn")
        gone = [(qkv[j * 32:(j + 1) * 32] == 0).all(1).reshape(4, 8).all(1) for j in range(3)]
        assert torch.equal(gone[0], gone[1]) and torch.equal(gone[1], gone[2]) and int(gone[0].sum()) == 2
        o = canonical(model, f"transformer.h.{i}.attn.c_proj")
        assert torch.equal((o == 0).all(0).reshape(4, 8).all(1), gone[0])
    assert len(pruning.pruners[0].couplings) == 2
    # GQA, query heads only: every KV group of a layer loses the same number; k and v stay whole
    model = llama()
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="mha", target_sparsity=0.5,
                                               pruning_scope="local", op_names=["self_attn"],
                                               parameters={"gqa_heads": "query"}), dataloader=tokens(1))
    for i in range(2):
        q = _heads_gone(model, f"model.layers.{i}.self_attn.q_proj", 8)
        assert q.reshape(2, 2).sum(1).tolist() == [1, 1]
        assert (canonical(model, f"model.layers.{i}.self_attn.k_proj") != 0).all()
        assert torch.equal(_heads_gone(model, f"model.layers.{i}.self_attn.o_proj", 8, rows=False), q)


def test_nn_multihead_attention_heads_over_its_fused_in_proj():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.head = nn.Linear(32, 2)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    torch.manual_seed(0)
    model = Encoder()
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="mha", target_sparsity=0.5,
                                               op_names=["attn"]), dataloader=[torch.randn(2, 5, 32)])
    w = model.attn.in_proj_weight
    gone = [(w[j * 32:(j + 1) * 32] == 0).all(1).reshape(4, 8).all(1) for j in range(3)]
    assert int(gone[0].sum()) == 2 and torch.equal(gone[0], gone[1]) and torch.equal(gone[0], gone[2])
    assert torch.equal((model.attn.out_proj.weight == 0).all(0).reshape(4, 8).all(1), gone[0])


@pytest.mark.parametrize("pattern, op", [("channelx1", "down_proj"), ("1xchannel", "up_proj")])
def test_ffn_channels_go_from_up_gate_and_down_together(pattern, op):
    model = llama()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern=pattern,
                                                         target_sparsity=0.25, op_names=[op]),
                              dataloader=tokens(1))
    total = 0
    for i in range(2):
        up = (model.model.layers[i].mlp.up_proj.weight == 0).all(1)
        gate = (model.model.layers[i].mlp.gate_proj.weight == 0).all(1)
        down = (model.model.layers[i].mlp.down_proj.weight == 0).all(0)
        assert torch.equal(up, gate) and torch.equal(up, down)
        total += int(up.sum())
    assert total == count_for_ratio(128, 0.25)
    report = pruning.report()
    assert report["model.layers.0.mlp.gate_proj"].pattern == pattern  # brought in by the coupling
    decisions = pruning.layer_plan.decisions
    partner = "model.layers.0.mlp.gate_proj"
    assert decisions[partner].group == 0 and decisions[partner].reason.startswith("coupled with")


def test_heads_need_an_attention_module_and_conflicts_are_errors():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.fc(x))

    with pytest.warns(UserWarning, match="not part of an attention module's heads"), \
            pytest.raises(NoPrunableLayerError, match="none of the selected layers fits pattern 'mha'"):
        prepare_pruning(Plain(), WeightPruningConfig(pruning_type="magnitude", pattern="mha"))
    with pytest.raises(ConfigError, match=r"selected by pruning_configs\[0\] and pruning_configs\[1\]"):
        prepare_pruning(llama(), WeightPruningConfig([{"op_names": ["down_proj"], "pattern": "channelx1"},
                                                      {"op_names": ["gate_proj"], "pattern": "4x1"}],
                                                     pruning_type="magnitude", target_sparsity=0.5))
