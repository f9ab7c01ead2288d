"""``nc-prune report`` and ``validate``: exact tables, one-line errors, exit codes, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nc_prune import SparsityReport
from nc_prune.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str) -> str:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"nc-prune {command}: error: "), err
    return err


def table(out: str, first_column: str = "layer"):
    """Rows of the first table in ``out`` whose header starts with ``first_column``, as lists of cells."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(first_column + " "))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("-"):
            break
        rows.append(line.split())
    return rows


# ---- help and usage -------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,expect", [
    ([], "COMMAND"), (["demo"], "--quick"), (["report"], "CHECKPOINT"), (["validate"], "--model"),
])
def test_help_on_every_command(argv, expect):
    """python -m nc_prune works, and every command explains itself."""
    r = subprocess.run([sys.executable, "-m", "nc_prune", *argv, "--help"], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: nc-prune{' ' + argv[0] if argv else ''} ")
    assert expect in r.stdout


def test_no_command_prints_help_and_fails(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "demo" in out and "report" in out and "validate" in out


def test_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--framework", "mxnet"])
    assert info.value.code == 2
    err = one_line_error(capsys.readouterr().err, "demo")
    assert "invalid choice: 'mxnet'" in err and "(see nc-prune demo --help)" in err


# ---- validate -----------------------------------------------------------------------------------------
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


YAML = """\
pruning_type: snip_momentum
excluded_op_names: ["^conv1$"]
end_step: 100
pruning_frequency: 10
pruning_configs:
  - op_names: ["fc"]
    pattern: "2:4"
    target_sparsity: 0.5
  - op_names: ["conv"]
    pattern: 4x1
    target_sparsity: 0.85
"""


def test_validate_yaml_plan_for_the_demo_cnn(tmp_path, capsys):
    code, out, err = run(capsys, "validate", write(tmp_path / "c.yaml", YAML), "--model", "demo-cnn")
    assert code == 0 and err == ""
    assert "valid, 2 pruner group(s)" in out
    assert "group 0: snip_momentum, pattern 2:4, target 50% (global scope, per layer 0%..98%), steps 0..100 " \
           "every 10 (exp decay)" in out
    rows = table(out)
    assert [r[:7] for r in rows] == [
        ["conv1", "Conv2d", "16x1x3x3", "-", "-", "-", "-"],
        ["conv2", "Conv2d", "32x16x3x3", "1", "4x1", "85%", "1,152"],  # 32/4 x 144 blocks
        ["fc1", "Linear", "64x128", "0", "2:4", "50%", "2,048"],       # 64 x 128/4 groups
        ["fc2", "Linear", "10x64", "-", "-", "-", "-"],
    ]
    assert out.splitlines()[-1].startswith("fc2 ")
    assert out.splitlines()[-1].endswith("left dense: classifier head (last linear layer)")
    assert "left dense: matched by excluded_op_names" in out


def test_validate_json_without_model_and_with_a_factory(tmp_path, capsys):
    path = write(tmp_path / "c.json", json.dumps({"pattern": "1xchannel", "target_sparsity": 0.25,
                                                 "pruning_type": "magnitude", "start_step": 5, "end_step": 5}))
    code, out, _ = run(capsys, "validate", path)
    assert code == 0 and "one-shot at step 5" in out and "pass --model" in out
    code, out, _ = run(capsys, "validate", path, "--model", "tests.cli.models:torch_mlp")
    assert code == 0
    assert [r[:7] for r in table(out)] == [
        ["0", "Linear", "32x16", "0", "1xchannel", "25%", "32"],
        ["2", "Linear", "32x32", "0", "1xchannel", "25%", "32"],
        ["4", "Linear", "4x32", "-", "-", "-", "-"],
    ]


def test_validate_a_keras_model(tmp_path, capsys):
    pytest.importorskip("keras")
    pytest.importorskip("nc_prune.keras")
    path = write(tmp_path / "c.json", json.dumps({"pattern": "2:4", "target_sparsity": 0.5}))
    code, out, err = run(capsys, "validate", path, "--model", "tests.cli.models:keras_cnn")
    assert code == 0, err
    rows = table(out)
    assert rows[0][:4] == ["conv", "Conv2D", "8x3x3x3", "-"]  # canonical (out, in, kh, kw): 27 columns, no 2:4
    assert rows[1][:7] == ["fc", "Dense", "16x288", "0", "2:4", "50%", "1,152"]  # 16 x 288/4 groups
    assert rows[2][:4] == ["head", "Dense", "2x16", "-"]
    assert "left dense: shape does not fit the pattern" in out


@pytest.mark.parametrize("text,suffix,message", [
    ('{"patern": "4x1"}', ".json", "unknown key 'patern' (did you mean 'pattern'?)"),
    ('{"pattern": "2:4", "target_sparsity": 0.6}', ".json", "above what pattern '2:4' can reach"),
    ("pattern: 2:4\ntarget_sparsity: 0.5\n", ".yaml", "read as the number 124; YAML reads an unquoted N:M"),
    ("pruning_configs:\n  - pattern: 1:4\n", ".yml", "pruning_configs[0]: pattern was read as the number 64"),
    ('{"pattern": "4x1"', ".json", "is not valid JSON"),
    ("a: [1,\n", ".yaml", "is not valid YAML"),
    ("[1, 2]", ".json", "must hold a mapping of WeightPruningConfig keys, got list"),
    ("{}", ".toml", "must end in .json, .yaml or .yml"),
    ('{"pruning_op_types": "Linear"}', ".json", "write pruning_op_types=['Linear']"),
])
def test_validate_errors_are_one_line_exit_2(tmp_path, capsys, text, suffix, message):
    code, out, err = run(capsys, "validate", write(tmp_path / f"c{suffix}", text))
    assert code == 2 and out == ""
    assert message in one_line_error(err, "validate")


@pytest.mark.parametrize("model,message", [
    ("resnet", "use 'demo-cnn' or 'package.module:factory'"),
    ("no_such_module_xyz:build", "cannot import 'no_such_module_xyz'"),
    ("tests.cli.models:missing", "has no attribute 'missing'"),
    ("tests.cli.models:broken", "calling broken() failed: RuntimeError: no weights file"),
    ("tests.cli.models:NOT_A_MODEL", "gave a int, not a torch.nn.Module or Keras model"),
])
def test_validate_model_spec_errors(tmp_path, capsys, model, message):
    code, _, err = run(capsys, "validate", write(tmp_path / "c.json", "{}"), "--model", model)
    assert code == 2 and message in one_line_error(err, "validate")


def test_validate_group_selecting_nothing_names_the_layers(tmp_path, capsys):
    code, out, err = run(capsys, "validate", write(tmp_path / "c.json", '{"op_names": ["^attn"]}'),
                         "--model", "demo-cnn")
    assert code == 2 and out == ""  # nothing is printed as "valid" before the plan fails
    assert "selects no layer. Prunable layers of the model: conv1 (Conv2d), conv2 (Conv2d), fc1 (Linear)" \
        in one_line_error(err, "validate")


def test_validate_without_pyyaml_says_how_to_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, err = run(capsys, "validate", write(tmp_path / "c.yaml", "pattern: 4x1\n"))
    assert code == 2 and "reading YAML needs PyYAML: pip install pyyaml" in one_line_error(err, "validate")


def test_layer_left_dense_by_shape_is_explained(tmp_path, capsys):
    code, out, _ = run(capsys, "validate", write(tmp_path / "c.json", '{"pattern": "2:4", "target_sparsity": 0.5}'),
                       "--model", "demo-cnn")
    assert code == 0
    assert table(out)[0][:4] == ["conv1", "Conv2d", "16x1x3x3", "-"]
    assert "left dense: shape does not fit the pattern" in out
    assert "note: layer 'conv1' with weight shape (16, 1, 3, 3) (2-D view 16x9) does not fit pattern '2:4'" in out


# ---- report -------------------------------------------------------------------------------------------
@pytest.fixture
def torch_model():
    torch = pytest.importorskip("torch")
    from tests.cli.models import torch_mlp
    torch.manual_seed(0)
    model = torch_mlp()
    with torch.no_grad():
        model[0].weight[:, :6] = 0  # 32 x 6 = 192 zeros of 512
        model[2].weight[:8] = 0  # 8 x 32 = 256 zeros of 1024
    return model


def test_report_state_dict_exact_counts(tmp_path, capsys, torch_model):
    import torch
    path = tmp_path / "m.pt"
    torch.save(torch_model.state_dict(), path)
    code, out, err = run(capsys, "report", str(path))
    assert code == 0 and err == ""
    rows = table(out)
    assert rows[:3] == [["0", "32x16", "512", "192", "37.50%", "-"], ["2", "32x32", "1,024", "256", "25.00%", "-"],
                        ["4", "4x32", "128", "0", "0.00%", "-"]]
    assert out.splitlines()[-1].split() == ["total", "1,664", "448", "26.92%"]
    torch.save({"model": torch_model.state_dict(), "epoch": 3}, path)  # a training checkpoint wrapper
    code, out2, _ = run(capsys, "report", str(path), "--json")
    data = json.loads(out2)
    assert data["total"] == {"params": 1664, "zeros": 448, "ratio": 448 / 1664}
    assert [l["name"] for l in data["layers"]] == ["0", "2", "4"]


def test_report_mid_pruning_checkpoint(tmp_path, capsys, torch_model):
    import torch
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    opt = torch.optim.SGD(torch_model.parameters(), lr=0.01)
    prepare_pruning(torch_model, WeightPruningConfig(pattern="4x1", target_sparsity=0.5, pruning_type="magnitude",
                                                     start_step=0, end_step=4, pruning_frequency=2), opt)
    for _ in range(3):
        opt.zero_grad()
        torch_model(torch.randn(4, 16)).sum().backward()
        opt.step()
    path = tmp_path / "mid.pt"
    torch.save(torch_model.state_dict(), path)
    code, out, _ = run(capsys, "report", str(path))
    assert code == 0
    assert "saved during pruning at step 3" in out
    assert [r[0] for r in table(out)] == ["0", "2", "4"]  # masks and scores are not reported as layers
    expected = SparsityReport.from_arrays({n: torch_model.get_submodule(n).weight.detach().numpy()
                                           for n in ("0", "2", "4")})
    assert out.splitlines()[-1].split()[2] == f"{expected.total_zeros:,}"


def test_report_pickled_model_needs_unsafe_load(tmp_path, capsys, torch_model):
    import torch
    path = tmp_path / "whole.pt"
    torch.save(torch_model, path)
    code, _, err = run(capsys, "report", str(path))
    assert code == 2 and "pass --unsafe-load if you trust it" in one_line_error(err, "report")
    code, out, _ = run(capsys, "report", str(path), "--unsafe-load")
    assert code == 0 and "model Sequential" in out
    assert out.splitlines()[-1].split()[1:3] == ["1,664", "448"]


def test_report_keras_model(tmp_path, capsys):
    pytest.importorskip("keras")
    pytest.importorskip("nc_prune.keras")
    from tests.cli.models import keras_cnn
    model = keras_cnn()
    kernel = model.get_layer("fc").kernel  # (in=288, out=16)
    value = kernel.numpy()
    value[:, :4] = 0  # 4 output units: 4 x 288 = 1152 zeros
    kernel.assign(value)
    path = tmp_path / "k.keras"
    model.save(path)
    code, out, err = run(capsys, "report", str(path))
    assert code == 0, err
    rows = table(out)
    assert rows[1] == ["fc", "16x288", "4,608", "1,152", "25.00%", "-"]  # canonical (out, in)
    assert rows[0][:2] == ["conv", "8x3x3x3"]


@pytest.mark.parametrize("name,content,message", [
    ("x.onnx", b"", "unknown checkpoint type"),
    ("missing.pt", None, "no such file"),
    ("junk.pt", b"not a zip", "is not a readable torch checkpoint (torch.save writes zip archives)"),
    ("cut.pt", "truncated", "is not a readable torch checkpoint"),
    ("list.pt", "list", "holds a list, not a state_dict or a torch model"),
    ("dict.pt", "dict", "a dict without a state_dict in it (keys: epoch, lr)"),
])
def test_report_errors_are_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content == "list":
        import torch
        torch.save([1, 2], path)
    elif content == "dict":
        import torch
        torch.save({"epoch": 1, "lr": 0.1}, path)
    elif content == "truncated":
        import torch
        torch.save({"w": torch.ones(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:-200])
    elif content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "report", str(path))
    assert code == 2 and out == ""
    assert message in one_line_error(err, "report")


def test_unexpected_errors_are_one_line_exit_1(monkeypatch, capsys, tmp_path):
    import nc_prune.cli as cli

    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "load_config_file", boom)
    code, _, err = run(capsys, "validate", "x.json")
    assert code == 1
    assert one_line_error(err, "validate") == (
        "nc-prune validate: error: RuntimeError: disk on fire second line (run with --debug for the traceback)\n")
    code, _, err = run(capsys, "--debug", "validate", "x.json")
    assert code == 1 and err.startswith("Traceback (most recent call last)")
