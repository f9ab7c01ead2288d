"""``nc-prune oneshot MODEL_DIR ...``: a transformers directory in, a pruned one out that loads with from_pretrained."""

from __future__ import annotations

import warnings

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import torch  # noqa: E402

from nc_prune.cli import main  # noqa: E402

TEXT = "\n".join(f"def f{i}(x):\n    return x * {i} + len('{'ab' * (i % 7)}')" for i in range(400))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with a byte-level BPE tokenizer, saved as a user would have it."""
    path = tmp_path_factory.mktemp("tiny-llama")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                                 initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(path)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=len(tok), max_position_embeddings=128, bos_token_id=0, eos_token_id=1))
    model.save_pretrained(path)
    (path / "calib.txt").write_text(TEXT, encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method, pattern", [("sparse_gpt", "2:4"), ("wanda", "1x1"), ("magnitude", "1x1")])
def test_oneshot_writes_a_pruned_model_that_loads_with_from_pretrained(capsys, tmp_path, model_dir, method, pattern):
    out = tmp_path / "pruned"
    code, text, err = run(capsys, "oneshot", model_dir, "--method", method, "--pattern", pattern, "--sparsity", "0.5",
                          "--calib", model_dir / "calib.txt", "--samples", "8", "--length", "32", "--out", out)
    assert code == 0, err
    assert "wrote" in text.splitlines()[-1] and "total" in text
    if method != "magnitude":
        assert text.startswith("one-shot: 14 layers in 2 blocks of model.layers, 2 batches (256 tokens)")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)  # a plain model: no nc_prune state in it
    assert not any("prune" in k for k in loaded.state_dict())
    for layer in loaded.model.layers:
        for lin in (layer.self_attn.q_proj, layer.mlp.down_proj):
            w = lin.weight
            if pattern == "2:4":
                assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
            elif method == "wanda":
                assert (w == 0).sum(1).tolist() == [w.shape[1] // 2] * w.shape[0]
            else:  # per-layer magnitude: half of each layer
                assert int((w == 0).sum()) == w.numel() // 2
    assert transformers.AutoTokenizer.from_pretrained(out)("def f(x)")["input_ids"]


def _one_line(err):
    assert err.count("\n") == 1 and err.startswith("nc-prune oneshot: error: "), err
    return err


def test_oneshot_refuses_bad_input_in_one_line(capsys, tmp_path, model_dir):
    calib = model_dir / "calib.txt"
    code, _, err = run(capsys, "oneshot", tmp_path, "--calib", calib, "--out", tmp_path / "o")
    assert code == 2 and "is not a transformers model directory (no config.json" in _one_line(err)
    code, _, err = run(capsys, "oneshot", model_dir, "--calib", tmp_path / "nope.txt", "--out", tmp_path / "o")
    assert code == 2 and "no such calibration text" in _one_line(err)
    code, _, err = run(capsys, "oneshot", model_dir, "--pattern", "4x1", "--calib", calib, "--out", tmp_path / "o")
    assert code == 2 and "prunes single weights: pattern '1x1'" in _one_line(err)
    (tmp_path / "short.txt").write_text("x = 1", encoding="utf-8")
    code, _, err = run(capsys, "oneshot", model_dir, "--calib", tmp_path / "short.txt", "--out", tmp_path / "o")
    assert code == 2 and "fewer than one window of 256" in _one_line(err)
    code, _, err = run(capsys, "oneshot", model_dir, "--calib", calib, "--out", model_dir)
    assert code == 2 and "--out must differ from MODEL_DIR" in _one_line(err)
