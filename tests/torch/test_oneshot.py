"""One-shot pruning of pretrained torch models: SparseGPT, Wanda and OWL, block by block from calibration data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nc_prune import ConfigError, NoPrunableLayerError, PruningStateError, WeightPruningConfig
from nc_prune.core.oneshot import LayerStats, prune_mask, sparsegpt, wanda_scores
from nc_prune.core.selection import count_for_ratio
from nc_prune.torch import prepare_pruning

warnings.filterwarnings("ignore", message=".*token_id must be.*")


def stack(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 64),
                         nn.Linear(64, 10))


def loud_inputs(n, seed=1):
    """Correlated inputs with four loud features, as LLM activations have (one distribution, ``seed`` draws)."""
    mix = torch.randn(64, 64, generator=torch.Generator().manual_seed(99)) * 0.3 + torch.eye(64)
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(64)
    scale[:4] = 20.0
    return [(torch.randn(32, 64, generator=g) @ mix) * scale for _ in range(n)]


def relative_error(model, reference, x):
    with torch.no_grad():
        return float((model(x) - reference).norm() / reference.norm())


@pytest.mark.parametrize("pattern, target", [("1x1", 0.5), ("2:4", 0.5), ("1x1", 0.7)])
def test_sparsegpt_and_wanda_reconstruct_the_outputs_better_than_magnitude(pattern, target):
    calib, test = loud_inputs(8), torch.cat(loud_inputs(4, seed=2))
    dense = stack()
    with torch.no_grad():
        reference = dense(test)
    errors = {}
    for method in ("magnitude", "wanda", "sparse_gpt"):
        model = stack()
        scope = {"pruning_scope": "local"} if method == "magnitude" else {}
        prepare_pruning(model, WeightPruningConfig(pruning_type=method, pattern=pattern, target_sparsity=target,
                                                   **scope), dataloader=calib)
        errors[method] = relative_error(model, reference, test)
    assert errors["sparse_gpt"] < errors["wanda"] < errors["magnitude"]
    assert errors["sparse_gpt"] < 0.6 * errors["magnitude"]


def _rows(weight):
    return (weight == 0).sum(1)


@pytest.mark.parametrize("method, params", [("sparse_gpt", {"mask_selection": "row"}), ("sparse_gpt", {}),
                                            ("wanda", {})])
def test_exact_counts_per_row_and_per_group_and_what_the_run_reports(method, params):
    model = stack()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type=method, pattern="1x1", target_sparsity=0.57,
                                                         parameters=params), dataloader=loud_inputs(4))
    for name in ("0", "2", "4"):
        w = model.get_submodule(name).weight
        if params or method == "wanda":  # each row to the target
            assert _rows(w).tolist() == [count_for_ratio(w.shape[1], 0.57)] * w.shape[0]
        else:  # SparseGPT's default: each column block as a whole, exact over the layer
            assert int(_rows(w).sum()) == count_for_ratio(w.numel(), 0.57) and _rows(w).min() < _rows(w).max()
        assert torch.equal(pruning.masks[name], w != 0)
    assert (model[5].weight != 0).all()  # the head stays dense
    report = pruning.calibration
    assert report.blocks == ("", 6) and report.batches == 4 and report.tokens == 128
    assert sorted(report.layers) == ["0", "2", "4"] and {l["sparsity"] for l in report.layers.values()} == {0.57}
    model = stack()
    prepare_pruning(model, WeightPruningConfig(pruning_type=method, pattern="2:4", target_sparsity=0.5),
                    dataloader=loud_inputs(4))
    for name in ("0", "2", "4"):
        w = model.get_submodule(name).weight
        assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()


def test_the_torch_path_and_the_numpy_core_give_the_same_masks_on_the_same_statistics():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 48)) @ (rng.standard_normal((48, 48)) * 0.3 + np.eye(48))
    w = rng.standard_normal((24, 48))
    ref, ten = LayerStats("l", True, True), LayerStats("l", True, True)
    ref.add(x)
    ten.add(torch.from_numpy(x))
    for nm, sparsity in ((None, 0.5), ((2, 4), 0.5), (None, 0.75)):
        a = sparsegpt(w, ref.hessian(), sparsity, nm=nm)
        b = sparsegpt(torch.from_numpy(w), ten.hessian(), sparsity, nm=nm)
        assert np.array_equal(a.pruned, b.pruned.numpy())
        np.testing.assert_allclose(a.weight, b.weight.numpy(), rtol=1e-4, atol=1e-5)  # float32 Hessians
        wa = prune_mask(wanda_scores(w, ref.squared_norms()), sparsity, nm)
        wb = prune_mask(wanda_scores(torch.from_numpy(w), ten.squared_norms()), sparsity, nm)
        assert np.array_equal(wa, wb.numpy())
    ties = np.ones((4, 8))  # all tied: the lower columns go on both
    assert np.array_equal(prune_mask(ties, 0.5, None), prune_mask(torch.from_numpy(ties), 0.5, None).numpy())


@pytest.mark.parametrize("batches", [
    "tensors", "tuples", "dicts"])
def test_batches_may_be_tensors_input_target_pairs_or_dicts(batches):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(64, 64), nn.Linear(64, 64)])
            self.head = nn.Linear(64, 3)

        def forward(self, x=None, features=None):
            x = features if x is None else x
            for b in self.blocks:
                x = torch.relu(b(x))
            return self.head(x)

    data = loud_inputs(3)
    wrap = {"tensors": lambda x: x, "tuples": lambda x: (x, torch.zeros(32, dtype=torch.long)),
            "dicts": lambda x: {"features": x}}[batches]
    model = Net()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="wanda", pattern="1x1", target_sparsity=0.5),
                              dataloader=[wrap(x) for x in data])
    assert pruning.calibration.blocks == ("blocks", 2)
    assert all(_rows(b.weight).tolist() == [32] * 64 for b in model.blocks)


# ---- transformers models --------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


def llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0))


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                                                n_positions=64, bos_token_id=0, eos_token_id=0))


def opt():
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100,
        word_embed_proj_dim=32, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=1))


def bert():
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, num_labels=3))


def padded_batches(n=4):
    """Batches of different lengths with padding at the end, as a tokenizer makes them."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 8 + 4 * i
        ids = torch.randint(2, 100, (2, length), generator=g)
        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, length // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@pytest.mark.parametrize("make, blocks, per_block", [(llama, "model.layers", 7), (gpt2, "transformer.h", 4),
                                                     (opt, "model.decoder.layers", 6),
                                                     (bert, "bert.encoder.layer", 6)])
@pytest.mark.parametrize("method", ["sparse_gpt", "wanda"])
def test_transformers_blocks_are_found_and_every_row_or_group_is_exact(make, blocks, per_block, method):
    model = make()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type=method, pattern="2:4", target_sparsity=0.5),
                              dataloader=padded_batches())
    assert pruning.calibration.blocks == (blocks, 2)
    inside = [n for n in pruning.calibration.layers if n.startswith(blocks + ".")]
    assert len(inside) == 2 * per_block
    for name in pruning.masks:
        keep = pruning.masks[name]
        w = model.get_submodule(name).weight
        canonical = w.t() if type(model.get_submodule(name)).__name__ == "Conv1D" else w
        assert ((canonical == 0).reshape(canonical.shape[0], -1, 4).sum(-1) == 2).all(), name
        assert torch.equal(keep, w != 0), name


def test_owl_spreads_the_target_over_the_blocks_and_keeps_the_total():
    model = llama()
    cfg = WeightPruningConfig(pruning_type="wanda", pattern="1x1", target_sparsity=0.7,
                              parameters={"sparsity_allocation": "owl", "owl_lambda": 0.08})
    pruning = prepare_pruning(model, cfg, dataloader=padded_batches())
    per_block = pruning.calibration.sparsity[0]
    assert set(per_block) == {0, 1} and round(sum(per_block.values()) / 2, 9) == 0.7
    assert round(abs(per_block[0] - per_block[1]), 9) == 0.16  # two blocks: target ± lambda
    for name, info in pruning.calibration.layers.items():
        w = model.get_submodule(name).weight
        assert _rows(w).tolist() == [count_for_ratio(w.shape[1], info["sparsity"])] * w.shape[0]


def test_groups_may_mix_one_shot_methods_and_a_generator_is_calibration_data_too():
    model = llama()
    cfg = WeightPruningConfig([{"op_names": ["self_attn"], "pruning_type": "wanda", "pattern": "2:4",
                                "target_sparsity": 0.5},
                               {"op_names": ["mlp"], "pruning_type": "sparse_gpt", "pattern": "1x1",
                                "target_sparsity": 0.6, "parameters": {"mask_selection": "row"}}])
    pruning = prepare_pruning(model, cfg, dataloader=(b for b in padded_batches()))
    methods = {n: l["method"] for n, l in pruning.calibration.layers.items()}
    assert {m for n, m in methods.items() if "self_attn" in n} == {"Wanda"}
    assert {m for n, m in methods.items() if "mlp" in n} == {"SparseGPT"} and len(methods) == 14
    w = model.model.layers[1].mlp.up_proj.weight
    assert (w == 0).sum(1).tolist() == [count_for_ratio(32, 0.6)] * 64
    q = model.model.layers[1].self_attn.q_proj.weight
    assert ((q == 0).reshape(32, -1, 4).sum(-1) == 2).all()


def test_inc_device_argument_and_blocks_named_explicitly():
    model = llama()
    pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="sparse_gpt", pattern="1x1",
                                                         target_sparsity=0.5),
                              dataloader=padded_batches(2), device="cpu", blocks="model.layers")
    assert pruning.calibration.blocks == ("model.layers", 2) and len(pruning.calibration.layers) == 14


# ---- refusals, before any weight changes -----------------------------------------------------------
def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if k in before)


def test_bad_input_is_refused_before_any_weight_changes():
    model = llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = WeightPruningConfig(pruning_type="sparse_gpt", pattern="1x1", target_sparsity=0.5)
    with pytest.raises(ConfigError, match="the dataloader gave no batch"):
        prepare_pruning(model, cfg, dataloader=[])
    with pytest.raises(ConfigError, match=r"rejected a calibration batch of structure dict\(tokens: Tensor\[2, 8\]"):
        prepare_pruning(model, cfg, dataloader=[{"tokens": torch.zeros(2, 8, dtype=torch.long)}])
    with pytest.raises(ConfigError, match=r"blocks='model.blocks' names no module of LlamaForCausalLM"):
        prepare_pruning(model, cfg, dataloader=padded_batches(1), blocks="model.blocks")
    with pytest.raises(NoPrunableLayerError, match="selects no layer"):
        prepare_pruning(model, WeightPruningConfig(pruning_type="wanda", pattern="1x1", op_names=["nothing"]),
                        dataloader=padded_batches(1))
    with pytest.raises(ConfigError, match="learns from calibration data; pass dataloader="):
        prepare_pruning(model, cfg).prune_now()
    assert _unchanged(model, before)


def test_no_block_list_and_conv_layers_are_told_what_to_do():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.b(self.a(x)))

    with pytest.raises(ConfigError, match=r"found no block list.*nn.ModuleList.*pass blocks='path.to.blocks'"):
        prepare_pruning(Flat(), WeightPruningConfig(pruning_type="wanda", pattern="1x1"),
                        dataloader=[torch.randn(4, 8)])
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 36, 4), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"layer '0' is a Conv2d.*prunes Linear layers and transformers' Conv1D"):
        prepare_pruning(conv, WeightPruningConfig(pruning_type="sparse_gpt", pattern="1x1"),
                        dataloader=[torch.randn(2, 3, 8, 8)])


def test_a_failure_midway_names_the_block_and_what_was_pruned():
    model = llama()
    second = model.model.layers[1].mlp.down_proj
    second.register_forward_hook(lambda m, i, o: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    with pytest.raises(PruningStateError, match=r"failed in block 1 \(model.layers.1\): RuntimeError: disk on fire\. "
                                                r"Pruned so far: blocks \[0\] \(7 layers\)"):
        prepare_pruning(model, WeightPruningConfig(pruning_type="wanda", pattern="1x1", target_sparsity=0.5),
                        dataloader=padded_batches(1))
    assert (model.model.layers[0].mlp.up_proj.weight == 0).sum() == 64 * 32 // 2
    assert (model.model.layers[1].mlp.up_proj.weight == 0).sum() == 0


@pytest.mark.parametrize("ptype", ["sparse_gpt", "wanda"])
def test_one_shot_types_refuse_training_time_use_instead_of_never_pruning(ptype):
    # before: prepare_pruning(..., optimizer=...) accepted them and training went on dense (0 of 128 zeros)
    model = stack()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = WeightPruningConfig(pruning_type=ptype, pattern="1x1", target_sparsity=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=rf"group 0 \(pruning_type='{ptype}'\) prunes a trained model at once .* "
                                          r"as prepare_pruning\(\.\.\., optimizer=\.\.\.\) asks"):
        prepare_pruning(model, cfg, optimizer)
    assert model.state_dict().keys() == before.keys()  # no buffers or hooks left behind
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not optimizer._optimizer_step_pre_hooks
    manual = prepare_pruning(model, cfg)
    with pytest.raises(ConfigError, match=r"as on_train_begin\(\) without a dataloader asks"):
        manual.on_train_begin()
    manual.on_train_begin(loud_inputs(2))  # INC's on_train_begin(dataloader): prunes from it now
    w = model[0].weight
    assert (w == 0).sum().item() == w.numel() // 2
