"""model_slim: pruned heads and FFN channels physically removed, outputs unchanged, saved and loaded back."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.torch import SlimError, load_slimmed, model_slim, prepare_pruning, prune

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", message=".*token_id must be.*")


def make(kind, kv=2):
    torch.manual_seed(0)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=kv, vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0))
    if kind == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                                                    vocab_size=100, n_positions=64, bos_token_id=0,
                                                                    eos_token_id=0))
    if kind == "opt":
        return transformers.OPTForCausalLM(transformers.OPTConfig(
            hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
            word_embed_proj_dim=32, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=1))
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, num_labels=3))


FFN_OP = {"llama": "down_proj", "gpt2": "mlp.c_proj", "opt": "fc2", "bert": r"\d\.output\.dense"}
X = torch.randint(2, 100, (2, 12), generator=torch.Generator().manual_seed(5))


def prune_heads_and_channels(model, kind, target=0.5, gqa="kv"):
    cfg = WeightPruningConfig([{"op_names": ["attn|attention"], "pattern": "mha", "parameters": {"gqa_heads": gqa}},
                               {"op_names": [FFN_OP[kind]], "pattern": "channelx1"}],
                              pruning_type="magnitude", target_sparsity=target, pruning_scope="local")
    return prepare_pruning(model, cfg, dataloader=[{"input_ids": X}])


def logits(model):
    with torch.no_grad():
        return model(input_ids=X).logits


@pytest.mark.parametrize("kind", ["llama", "gpt2", "opt", "bert"])
def test_slimmed_outputs_equal_the_masked_models_and_exactly_what_was_pruned_goes(kind, tmp_path):
    model = make(kind).eval()
    prune_heads_and_channels(model, kind)
    masked = logits(model)
    report = model_slim(model)
    kv_unit = 2 if kind == "llama" else 1  # GQA: a KV head goes with its 2 query heads
    assert report.removed == {"heads": 2 * 2, "channels": 2 * 32}
    assert all(r.after == r.before // 2 for r in report.removals)
    torch.testing.assert_close(logits(model), masked, atol=1e-5, rtol=1e-5)
    dense_params = sum(p.numel() for p in make(kind).parameters())
    assert report.params_before == dense_params and report.params_after < dense_params
    assert sum(p.numel() for p in model.parameters()) == report.params_after
    assert not any("prune" in k for k in model.state_dict())  # pruning state is gone: the model is plain
    model.save_pretrained(tmp_path)
    if kind == "llama":  # Llama's config has head_dim: from_pretrained rebuilds the slimmed model
        assert report.config_expresses_it and model.config.num_attention_heads == 2
        assert model.config.num_key_value_heads == 2 // kv_unit and model.config.intermediate_size == 32
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    else:
        assert not report.config_expresses_it
        assert "derives head_dim" in report.why_not[0] and "load_slimmed" in str(report)
        with pytest.raises(RuntimeError, match="size mismatch|mismatched"):  # never loaded silently at the old sizes
            type(model).from_pretrained(tmp_path)
        loaded = load_slimmed(str(tmp_path))
    torch.testing.assert_close(logits(loaded), masked, atol=1e-5, rtol=1e-5)


def test_query_heads_within_kv_groups_and_uneven_groups_are_refused_untouched():
    model = make("llama").eval()
    prune_heads_and_channels(model, "llama", gqa="query")
    masked = logits(model)
    report = model_slim(model)
    assert [(r.name, r.after) for r in report.removals if r.kind == "heads"] == \
        [("model.layers.0.self_attn", 2), ("model.layers.1.self_attn", 2)]
    assert model.model.layers[0].self_attn.num_key_value_groups == 1 and model.config.num_key_value_heads == 2
    torch.testing.assert_close(logits(model), masked, atol=1e-5, rtol=1e-5)
    model = make("llama").eval()
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight[:, :8] = 0  # one query head of KV group 0 only
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SlimError, match=r"model.layers.0.self_attn: the zeroed query heads differ in number between "
                                        r"KV groups \[1, 0\]"):
        model_slim(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_torch_multihead_attention_cannot_lose_heads_and_says_so():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0])

    model = Encoder()
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="mha", target_sparsity=0.5,
                                               op_names=["attn"]), dataloader=[torch.randn(1, 3, 16)])
    with pytest.raises(SlimError, match="MultiheadAttention keeps q, k and v at its embed_dim"):
        model_slim(model)


def test_a_dry_run_changes_nothing_and_nothing_pruned_is_nothing_removed():
    model = make("llama").eval()
    prune_heads_and_channels(model, "llama")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    report = model_slim(model, dry_run=True)
    assert report.removed == {"heads": 4, "channels": 64}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    plain = make("llama")
    assert model_slim(plain).removed == {} and plain.config.num_attention_heads == 4


def test_channels_zeroed_by_the_prune_drop_in_are_removed_too():
    model = make("llama").eval()
    for layer in model.model.layers:
        prune.ln_structured(layer.mlp.down_proj, "weight", amount=16, n=1, dim=1)  # 16 input columns of down
    masked = logits(model)
    report = model_slim(model)
    assert report.removed == {"channels": 32}
    assert model.model.layers[0].mlp.up_proj.weight.shape == (48, 32)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (32, 48) and model.config.intermediate_size == 48
    torch.testing.assert_close(logits(model), masked, atol=1e-5, rtol=1e-5)


# ---- traced models: conv filters with BatchNorm, residual additions, depthwise convs, Linear chains ---------
def resnet():
    from .test_real_models import ResNet18ish
    torch.manual_seed(0)
    return ResNet18ish().eval()


class MobileBlock(nn.Module):
    """MobileNetV2's inverted residual: expand 1x1, depthwise 3x3, project 1x1, with the residual add."""

    def __init__(self, c=8, expand=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(c, c * expand, 1, bias=False), nn.BatchNorm2d(c * expand), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(c * expand, c * expand, 3, padding=1, groups=c * expand, bias=False),
                                nn.BatchNorm2d(c * expand), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(c * expand, c, 1, bias=False), nn.BatchNorm2d(c))
        self.head = nn.Linear(c * 16, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1))


def _randomize_norms(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)


@pytest.mark.parametrize("make, x_shape", [(resnet, (2, 3, 32, 32)), (MobileBlock, (2, 3, 8, 8))])
def test_conv_channels_go_with_batchnorm_residuals_depthwise_and_readers(make, x_shape):
    model = make().eval()
    _randomize_norms(model)
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(2))
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="1xchannel",
                                                         target_sparsity=0.4, pruning_scope="local",
                                                         op_names=["conv|stem|down|expand|project"],
                                                         parameters={"coupled": True}),  # every conv is selected
                              dataloader=[x])
    assert pruning.pruners[0].couplings  # filters are coupled with their readers
    masked = logits_of(model, x)
    before = sum(p.numel() for p in model.parameters())
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    head_shape = tuple(head.weight.shape)
    report = model_slim(model)
    assert report.removed["channels"] > 0 and report.params_after < before
    # the classifier head reads the last channels: it loses their input columns, never an output
    assert head.out_features == head_shape[0] and head.in_features < head_shape[1]
    torch.testing.assert_close(logits_of(model, x), masked, atol=1e-5, rtol=1e-4)
    fresh = make().eval()
    from nc_prune.torch import load_slimmed_state
    load_slimmed_state(fresh, model.state_dict())
    torch.testing.assert_close(logits_of(fresh, x), masked, atol=1e-5, rtol=1e-4)
    if make is MobileBlock:  # the depthwise conv lost the same channels as the expansion
        assert model.dw[0].groups == model.dw[0].in_channels == model.dw[0].out_channels == model.expand[0].out_channels
        assert model.dw[1].num_features == model.expand[0].out_channels < 32


def logits_of(model, x):
    with torch.no_grad():
        return model(x)


def test_channels_behind_an_operation_it_does_not_understand_are_refused_and_nothing_is_cut():
    class Reshaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.b = nn.Linear(16, 4)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) + h.view(-1, 4, 4).sum((1, 2))[:, None]  # the channels also feed a reshape

    model = Reshaped()
    with torch.no_grad():
        model.b.weight[:, :4] = 0
    with pytest.raises(SlimError, match=r"channels \[0, 1, 2, 3\] of a .* cannot be removed safely: \.view\(\) is "
                                        r"not understood"):
        model_slim(model)
    assert model.a.weight.shape == (16, 8) and model.b.weight.shape == (4, 16)


def test_a_residual_with_the_models_input_is_refused_not_cut_into_a_broken_model():
    # before: c1 lost channel 1 and the model then failed in forward (4 input channels + 3 from c1)
    class InputResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.c2(x + self.c1(x))

    model = InputResidual()
    with torch.no_grad():
        model.c2.weight[:, 1] = 0
    x = torch.randn(1, 4, 5, 5)
    before = logits_of(model, x)
    with pytest.raises(SlimError, match=r"channels \[1\] of c1 .* cannot be removed safely: add \(add\) combines "
                                        r"the channels with a tensor they are not traced through"):
        model_slim(model)
    assert model.c1.weight.shape == (4, 4, 3, 3) and torch.equal(logits_of(model, x), before)


def test_a_plain_linear_chain_loses_channels_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4))
    prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="channelx1", target_sparsity=0.5,
                                               pruning_scope="local", op_names=["2", "4"]),
                    dataloader=[torch.randn(4, 8)])
    x = torch.randn(5, 8)
    masked = logits_of(model, x)
    report = model_slim(model)
    assert [(r.before, r.after) for r in report.removals] == [(32, 16), (16, 8)]
    assert [m.weight.shape for m in model if isinstance(m, nn.Linear)] == [(16, 8), (8, 16), (4, 8)]
    torch.testing.assert_close(logits_of(model, x), masked)


def test_channels_zeroed_by_a_prune_impl_parametrization_are_removed_too():
    from nc_prune.torch.prune_impl import ChannelStructured, MagnitudePruneImpl, attach_prune_impl
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4))
    attach_prune_impl(model, MagnitudePruneImpl.with_args(target_sparsity=0.25, pruning_scheme=ChannelStructured(axis=1)),
                      op_names=["^2$"])  # 8 of the 32 input columns of the middle Linear
    x = torch.randn(5, 8)
    masked = logits_of(model, x)  # the parametrization's first forward computes the mask
    report = model_slim(model)
    assert report.removed == {"channels": 8}
    assert [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear)] == [(24, 8), (16, 24), (4, 16)]
    assert not torch.nn.utils.parametrize.is_parametrized(model[2])  # baked in and gone
    torch.testing.assert_close(logits_of(model, x), masked)
