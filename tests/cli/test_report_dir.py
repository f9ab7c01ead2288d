"""``nc-prune report DIR``: a directory save_pruned wrote, read from JSON and safetensors, never unpickled."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from nc_prune import WeightPruningConfig  # noqa: E402
from nc_prune.cli import main  # noqa: E402
from nc_prune.torch import prepare_pruning, save_pruned  # noqa: E402

CFG = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, pruning_scope="local")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pruned_mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4))
    pruning = prepare_pruning(model, CFG)
    pruning.prune_now()
    return model, pruning


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch.load is the only way a torch file gets unpickled here: make it fail the test."""
    def refuse(*a, **k):
        raise AssertionError("torch.load was called")
    monkeypatch.setattr(torch, "load", refuse)


def test_report_of_a_saved_directory(tmp_path, capsys, no_unpickling):
    model, pruning = pruned_mlp()
    save_pruned(pruning, tmp_path, bitmask=True)
    code, out, err = run(capsys, "report", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"{tmp_path}: saved by nc_prune 0.1.0 save_pruned (torch.nn.modules.container.Sequential, "
                        f"bitmask storage in nc_prune_bitmask.safetensors, at pruning step 1); bitmask storage: "
                        f"1,216 bytes of tensors where dense would take 1,936 (720 saved, 37.2%)")
    assert lines[1].split() == ["layer", "shape", "params", "zeros", "sparsity", "pattern", "units", "note"]
    assert [l.split()[:6] for l in lines[3:6]] == [["0", "16x8", "128", "64", "50.00%", "4x1"],
                                                   ["2", "16x16", "256", "128", "50.00%", "4x1"],
                                                   ["4", "4x16", "64", "0", "0.00%", "-"]]
    assert lines[3].split()[6:] == ["16/32", "(50.0%)"] and lines[5].endswith("classifier head")
    assert lines[-1].split() == ["total", "448", "192", "42.86%", "48/96", "(50.0%)"]


def test_report_json_of_a_saved_directory_carries_the_record(tmp_path, capsys, no_unpickling):
    model, pruning = pruned_mlp()
    meta = save_pruned(pruning, tmp_path)
    code, out, err = run(capsys, "report", str(tmp_path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["total"] == {"params": 448, "zeros": 192, "ratio": 192 / 448, "unit_ratio": 0.5}
    assert data["saved"] == meta and data["saved"]["config"] == CFG.to_dict()


def test_weights_changed_after_saving_are_pointed_out(tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    model, _ = pruned_mlp()
    save_pruned(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["0.weight"][0, :] = 0  # 8 weights, 4 of them kept before
    save_file(state, tmp_path / "model.safetensors")
    code, out, err = run(capsys, "report", str(tmp_path))
    assert code == 0, err
    assert out.splitlines()[0].endswith("; weights changed since saving: 0 (68 zeros in the weights, 64 recorded)")


def test_a_safetensors_directory_without_a_record_lists_its_weights(tmp_path, capsys, no_unpickling):
    from safetensors.torch import save_file
    w = torch.ones(4, 6)
    w[:, :3] = 0
    save_file({"fc.weight": w, "fc.bias": torch.zeros(4)}, tmp_path / "model.safetensors")
    code, out, err = run(capsys, "report", str(tmp_path))
    assert code == 0, err
    assert out.splitlines()[0] == (f"{tmp_path}: safetensors weights without an nc_prune.json (model.safetensors)")
    assert out.splitlines()[3].split() == ["fc", "4x6", "24", "12", "50.00%", "-"]


def test_a_directory_with_only_a_pickle_is_refused_naming_the_fix(tmp_path, capsys, no_unpickling):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    code, out, err = run(capsys, "report", str(tmp_path))
    assert code == 2 and out == ""
    assert err == (f"nc-prune report: error: {tmp_path} holds no nc_prune.json and no .safetensors file, only "
                   f"pickle files (pytorch_model.bin); report does not unpickle a directory's files: pass the file "
                   f"itself (nc-prune report {tmp_path}/pytorch_model.bin, which reads tensors only), or save the "
                   f"model with nc_prune.torch.save_pruned(model, DIR)\n")


def test_an_empty_directory_and_a_broken_record_are_one_line_errors(tmp_path, capsys):
    code, _, err = run(capsys, "report", str(tmp_path))
    assert code == 2 and "no nc_prune.json and no .safetensors weights in it" in err
    (tmp_path / "nc_prune.json").write_text("{")
    code, _, err = run(capsys, "report", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path}/nc_prune.json is not valid JSON" in err and "write it again with save_pruned" in err
