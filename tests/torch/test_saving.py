"""save_pruned / load_pruned: safetensors + nc_prune.json, dense and bitmask storage, bit-exact round trips."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from nc_prune import SavedModelError, WeightPruningConfig
from nc_prune.torch import load_pruned, prepare_pruning, read_pruned, save_pruned, saved_report, sparsity_report
from nc_prune.torch.pruning import live_pruning
from nc_prune.torch.saving import BITMASK_FILE, RECORD_FILE, WEIGHTS_FILE, pack_bitmask, unpack_bitmask

CFG = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, pruning_scope="local")


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture
def pruned():
    torch.manual_seed(0)
    model = mlp()
    pruning = prepare_pruning(model, CFG)
    pruning.prune_now()
    return model, pruning


def snapshot(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bitmask", [False, True])
def test_round_trip_is_bit_exact_and_the_model_is_left_alone(tmp_path, pruned, bitmask):
    model, pruning = pruned
    before = snapshot(model)
    meta = save_pruned(model, tmp_path / "out", bitmask=bitmask)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert "0.weight_prune_mask" in after and live_pruning(model) is pruning  # still being pruned

    files = sorted(os.listdir(tmp_path / "out"))
    assert files == sorted([RECORD_FILE, BITMASK_FILE if bitmask else WEIGHTS_FILE])
    torch.manual_seed(1)
    fresh = mlp()
    assert load_pruned(tmp_path / "out", fresh) is fresh
    x = torch.randn(5, 8)
    assert torch.equal(fresh(x), model(x))
    state, _ = read_pruned(tmp_path / "out")
    assert sorted(state) == sorted(k for k in before if "_prune_" not in k and not k.startswith("nc_prune_"))
    assert int((state["0.weight"] == 0).sum()) == 64 and int((state["2.weight"] == 0).sum()) == 128
    assert meta["storage"] == ("bitmask" if bitmask else "dense")


def test_the_record_lists_each_layer_as_the_live_report_does(tmp_path, pruned):
    model, pruning = pruned
    meta = save_pruned(model, tmp_path)
    on_disk = json.loads((tmp_path / RECORD_FILE).read_text())
    assert on_disk == meta
    assert meta["config"] == CFG.to_dict() and meta["step"] == 1 and meta["nc_prune_version"] == "0.1.0"
    assert meta["model_class"] == "torch.nn.modules.container.Sequential"
    first, second, head = meta["layers"]
    assert first == {"name": "0", "pruned": True, "group": 0, "key": "0.weight", "layout": "canonical",
                     "pattern": "4x1", "pruning_type": "magnitude", "pruning_scope": "local",
                     "target_sparsity": 0.5, "shape": [16, 8], "params": 128, "zeros": 64, "sparsity": 0.5,
                     "units": 32, "pruned_units": 16}
    assert (second["name"], second["zeros"], second["units"], second["pruned_units"]) == ("2", 128, 64, 32)
    assert (head["name"], head["pruned"], head["zeros"], head["note"]) == ("4", False, 0, "classifier head")
    assert meta["total"] == {"params": 448, "zeros": 192, "sparsity": 192 / 448}
    live = sparsity_report(model)
    saved, _ = saved_report(tmp_path)
    assert str(saved) == str(live)  # the same table, from the files alone


def test_a_dead_pruning_object_leaves_the_config_unknown_unless_passed(tmp_path):
    torch.manual_seed(0)
    model = mlp()
    prepare_pruning(model, CFG).prune_now()  # the TorchPruning is dropped at once
    assert save_pruned(model, tmp_path / "a")["config"] is None
    torch.manual_seed(0)
    model = mlp()
    pruning = prepare_pruning(model, CFG)
    pruning.prune_now()
    assert save_pruned(pruning, tmp_path / "b")["config"] == CFG.to_dict()


def test_bitmask_storage_states_the_bytes_it_saves(tmp_path, pruned):
    model, _ = pruned
    meta = save_pruned(model, tmp_path, bitmask=True)
    stored = meta["bitmask"]
    # 0.weight: 64 values x 4 B + 128 bits = 272 B (dense 512); 2.weight: 128 x 4 + 32 = 544 B (dense 1024);
    # the dense head (256 B) and the biases (36 x 4 = 144 B) are stored as they are
    assert stored["tensors"] == {
        "0.weight": {"shape": [16, 8], "dtype": "float32", "stored": 64, "dense_bytes": 512, "bitmask_bytes": 272},
        "2.weight": {"shape": [16, 16], "dtype": "float32", "stored": 128, "dense_bytes": 1024,
                     "bitmask_bytes": 544}}
    assert (stored["dense_bytes"], stored["stored_bytes"], stored["saved_bytes"]) == (1936, 1216, 720)
    dense = save_pruned(model, tmp_path / "dense")
    assert "bitmask" not in dense
    # the files: 720 B less payload, 184 B more header (two keys per packed tensor)
    assert os.path.getsize(tmp_path / "dense" / WEIGHTS_FILE) == 2368
    assert os.path.getsize(tmp_path / BITMASK_FILE) == 1832


def test_pack_bitmask_keeps_every_bit():
    t = torch.tensor([[0.0, -0.0, 1.5, float("nan")], [0.0, 0.0, float("-inf"), 2.0], [0.0] * 4])
    values, bits = pack_bitmask(t)
    assert values.numel() == 5 and bits.tolist() == [0b01110011, 0b00000000][: bits.numel()]
    back = unpack_bitmask(values, bits, tuple(t.shape))
    assert torch.equal(back.view(torch.int32), t.view(torch.int32))  # -0.0 and NaN as they were
    half = torch.tensor([0.0, 3.0, 0.0], dtype=torch.bfloat16)
    assert torch.equal(unpack_bitmask(*pack_bitmask(half), (3,)), half)
    with pytest.raises(SavedModelError, match=r"a bitmask of 1 torch.uint8 values cannot describe shape \[3, 4\]"):
        unpack_bitmask(values, bits[:1], (3, 4))


def test_an_unpruned_model_is_saved_with_its_zeros_and_listed_dense(tmp_path):
    torch.manual_seed(0)
    model = mlp()
    with torch.no_grad():
        model[0].weight[:, :2] = 0  # 32 zeros
    meta = save_pruned(model, tmp_path, bitmask=True)
    assert [(e["name"], e["pruned"], e["zeros"]) for e in meta["layers"]] == [("0", False, 32), ("2", False, 0),
                                                                            ("4", False, 0)]
    assert meta["config"] is None and meta["step"] is None
    assert list(meta["bitmask"]["tensors"]) == ["0.weight"]  # 96 x 4 + 16 = 400 B < 512 B
    fresh = mlp()
    x = torch.randn(2, 8)
    assert torch.equal(load_pruned(tmp_path, fresh)(x), model(x))


def test_bad_input_is_refused_naming_the_fix(tmp_path, pruned):
    model, _ = pruned
    (tmp_path / "file").write_text("x")
    with pytest.raises(SavedModelError, match="is a file; save_pruned writes a directory"):
        save_pruned(model, tmp_path / "file")
    with pytest.raises(TypeError, match="save_pruned needs a torch.nn.Module .* got dict"):
        save_pruned({}, tmp_path)
    with pytest.raises(SavedModelError, match=r"has no nc_prune.json: it was not written by nc_prune.torch.save_pruned"):
        load_pruned(tmp_path, mlp())
    save_pruned(model, tmp_path / "out")
    wrong = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    with pytest.raises(SavedModelError, match=r"does not fit Sequential: unexpected 4.bias, 4.weight; give the "
                                              r"architecture the directory was saved from"):
        load_pruned(tmp_path / "out", wrong)
    with pytest.raises(SavedModelError, match=r"missing nc_prune_plan, nc_prune_step, 0.weight_prune_mask, .*it is being pruned: load into the "
                                              r"plain model"):
        load_pruned(tmp_path / "out", model)
    wider = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(SavedModelError, match=r"tensor '0.weight' has shape \[16, 8\], the model's \[32, 8\]"):
        load_pruned(tmp_path / "out", wider)
    os.remove(tmp_path / "out" / WEIGHTS_FILE)
    with pytest.raises(SavedModelError, match="lists model.safetensors, which is missing; copy the whole directory"):
        load_pruned(tmp_path / "out", mlp())


# ---- transformers ----------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


def tiny_bert():
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(config).eval(), config


@pytest.mark.parametrize("bitmask", [False, True])
def test_transformers_model_round_trips_through_save_pretrained(tmp_path, bitmask):
    model, config = tiny_bert()
    pruning = prepare_pruning(model, CFG)
    pruning.prune_now()
    meta = save_pruned(model, tmp_path, bitmask=bitmask)
    pruned = [e for e in meta["layers"] if e["pruned"]]
    # 12 encoder Linears and the MLM head's transform; the tied decoder stays dense (its 32 zeros are the
    # embedding's padding row)
    assert len(pruned) == 13 and sum(e["zeros"] for e in pruned) == sum(e["params"] for e in pruned) // 2 == 8704
    assert meta["layers"][-1]["note"] == "weight shared with bert.embeddings.word_embeddings.weight"
    ids = torch.arange(12).reshape(2, 6) % 64
    expected = model(input_ids=ids).logits
    if bitmask:
        assert sorted(os.listdir(tmp_path)) == sorted(["config.json", BITMASK_FILE, RECORD_FILE])
        loaded = load_pruned(tmp_path, transformers.BertForMaskedLM(config).eval())
        assert meta["bitmask"]["saved_bytes"] == 8704 * 4 - 17408 // 8 == 32640
    else:
        assert meta["weights"] == ["model.safetensors"] and "config.json" in os.listdir(tmp_path)
        loaded = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()  # plain transformers loading
        # load_pruned reads the same directory; the tied decoder weight was saved once, as transformers does
        again = load_pruned(tmp_path, transformers.BertForMaskedLM(config).eval())
        assert torch.equal(again(input_ids=ids).logits, expected)
    assert torch.equal(loaded(input_ids=ids).logits, expected)
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    assert sparsity_report(loaded).total_zeros == 8704 + 32
