"""``nc-prune report`` and ``validate``: exact tables, one-line errors, exit codes, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import struct
import sys
import zipfile
from pathlib import Path
from typing import Tuple

import pytest

from nc_prune import SparsityReport
from nc_prune.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "cli.md"
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
    assert out.splitlines()[-1].endswith("left dense: classifier head")
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
    assert {k: data["total"][k] for k in ("params", "zeros", "ratio")} == {"params": 1664, "zeros": 448,
                                                                        "ratio": 448 / 1664}
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
    ("cut.pt", "truncated", "is damaged: a zip archive without its central directory (truncated?)"),
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


# ---- report on damaged files ------------------------------------------------------------------------
def flipped_copies(path: Path, n: int = 40, masks=(0xFF, 0x01, 0x80)):
    """Copies of ``path`` with one byte XOR-ed at ``n`` evenly spaced offsets (deterministic): (offset, copy)."""
    data = path.read_bytes()
    for i in range(n):
        offset = i * len(data) // n
        for mask in masks:
            damaged = bytearray(data)
            damaged[offset] ^= mask
            copy = path.with_name(f"{path.stem}_{offset}_{mask:02x}{path.suffix}")
            copy.write_bytes(bytes(damaged))
            yield offset, copy


def record_data(path: Path, suffix: str) -> Tuple[zipfile.ZipInfo, int]:
    """The zip record of ``path`` whose name ends with ``suffix`` (the largest if empty), and where its bytes start."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if i.filename.endswith(suffix)), key=lambda i: i.file_size)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
    return info, info.header_offset + 30 + name_len + extra_len


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def report_codes(capsys, copies, *options):
    """Run report on every copy: ``{exit code: [error lines]}``; a damaged file is never told to unpickle."""
    codes = {}
    for offset, copy in copies:
        code, out, err = run(capsys, "report", str(copy), *options)
        assert code in (0, 2), (offset, err)  # never 1, "unexpected"
        if code == 2:
            assert out == "" and "damaged" in one_line_error(err, "report"), (offset, err)
            assert "--unsafe-load" not in err, (offset, err)
        codes.setdefault(code, []).append(err)
    return codes


def test_report_byte_flipped_state_dicts_are_damaged_never_unexpected(tmp_path, capsys):
    """Every exception torch.load raises on a damaged file is one line, exit 2, saying "damaged"."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    path = tmp_path / "small.pt"  # small, so that the 40 offsets also hit the pickle and the zip records
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).state_dict(), path)
    codes = report_codes(capsys, flipped_copies(path))
    assert len(codes[2]) >= 40 and len(codes[0]) >= 10  # both happen: see the next test for the ones that load
    assert any("CRC-32" in e for e in codes[2])  # the damaged record is named when the zip can tell
    codes = report_codes(capsys, flipped_copies(path, n=10), "--unsafe-load")  # plain pickle: other exceptions
    assert len(codes[2]) >= 10


def test_report_checks_structure_not_integrity_and_the_docs_say_so(tmp_path, capsys, torch_model):
    import torch
    path = tmp_path / "m.pt"
    torch.save(torch_model.state_dict(), path)
    info, start = record_data(path, "")  # the largest record: a tensor's bytes
    flip(path, start + info.file_size // 2)
    code, out, err = run(capsys, "report", str(path))
    assert code == 0 and err == ""  # torch.load does not check the CRC-32 that torch.save wrote
    docs = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert "`report` checks structure, not integrity" in docs
    assert "a flipped byte inside tensor data goes unnoticed" in docs and "sha256sum" in docs


def test_report_damaged_pickled_model_is_damaged_not_unsafe(tmp_path, capsys, torch_model):
    """A whole pickled model whose pickle was damaged: "damaged", with or without --unsafe-load."""
    import torch
    path = tmp_path / "whole.pt"
    torch.save(torch_model, path)
    info, start = record_data(path, "/data.pkl")
    flip(path, path.read_bytes().index(b"torch.nn.modules", start) + 2)  # a global: "torch" -> "tosch"
    for options in ((), ("--unsafe-load",)):
        code, _, err = run(capsys, "report", str(path), *options)
        assert code == 2 and "--unsafe-load" not in err
        assert f"{path} is damaged (BadZipFile: Bad CRC-32 for file '{info.filename}')" in one_line_error(err, "report")


def test_report_damaged_pickle_that_still_loads_is_damaged(tmp_path, capsys, torch_model):
    """A flip in a key name unpickles fine (torch.load cannot tell): the pickle's CRC-32 is checked first."""
    import torch
    path = tmp_path / "m.pt"
    torch.save(torch_model.state_dict(), path)
    info, start = record_data(path, "/data.pkl")
    flip(path, path.read_bytes().index(b"2.weight", start) + 6)  # "2.weight" -> "2.weigit": silently no layer 2
    assert list(torch.load(path, weights_only=True))[2] == "2.weigit"
    code, out, err = run(capsys, "report", str(path))
    assert code == 2 and out == ""
    assert f"{path} is damaged (BadZipFile: Bad CRC-32 for file '{info.filename}')" in one_line_error(err, "report")


def test_report_state_dict_of_parameters(tmp_path, capsys, torch_model):
    """Tensors that require grad (a dict of nn.Parameter, not model.state_dict()) are read like any other."""
    import torch
    path = tmp_path / "params.pt"
    torch.save(dict(torch_model.named_parameters()), path)
    code, out, err = run(capsys, "report", str(path))
    assert code == 0, err
    assert out.splitlines()[-1].split() == ["total", "1,664", "448", "26.92%"]


def test_report_pickled_model_without_crcs_still_needs_unsafe_load(tmp_path, capsys, torch_model):
    """torch.save without CRC-32s (set_crc32_options(False)): no evidence of damage, so the advice stands."""
    import torch
    path = tmp_path / "whole.pt"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(torch_model, path)
    finally:
        torch.serialization.set_crc32_options(True)
    code, _, err = run(capsys, "report", str(path))
    assert code == 2 and "torch.nn.modules.container.Sequential" in err and "pass --unsafe-load" in err


def test_report_unsafe_load_of_a_model_whose_class_is_gone(tmp_path, capsys, monkeypatch):
    import torch
    (tmp_path / "gone_module.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_module
    path = tmp_path / "net.pt"
    torch.save(gone_module.Net(4, 2), path)
    (tmp_path / "gone_module.py").unlink()
    monkeypatch.delitem(sys.modules, "gone_module")
    code, _, err = run(capsys, "report", str(path), "--unsafe-load")
    assert code == 2 and "damaged" not in err
    assert "unpickling it needs code that cannot be imported here (ModuleNotFoundError: No module named " \
           "'gone_module')" in one_line_error(err, "report")


@pytest.fixture
def keras_file(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("nc_prune.keras")
    from tests.cli.models import keras_cnn
    path = tmp_path / "k.keras"
    keras_cnn().save(path)
    return path


def test_report_byte_flipped_keras_files_are_damaged_never_unexpected(keras_file, capsys):
    codes = report_codes(capsys, flipped_copies(keras_file, masks=(0xFF,)))
    assert len(codes[2]) >= 35  # Keras reads the members through zipfile, which checks their CRC-32
    assert any("Bad CRC-32 for file 'model.weights.h5'" in e for e in codes[2])


@pytest.mark.parametrize("content,message", [
    (b"not a zip", "is not a readable .keras model (.keras files are zip archives)"),
    ("truncated", "is damaged: a zip archive without its central directory (truncated?)"),
])
def test_report_keras_file_that_is_not_a_zip(keras_file, capsys, content, message):
    keras_file.write_bytes(keras_file.read_bytes()[:-100] if content == "truncated" else content)
    code, _, err = run(capsys, "report", str(keras_file))
    assert code == 2 and message in one_line_error(err, "report")


def test_report_keras_subclassed_model_needs_import(tmp_path, capsys, monkeypatch):
    keras = pytest.importorskip("keras")
    pytest.importorskip("nc_prune.keras")
    import numpy as np
    from tests.cli import keras_subclass
    model = keras_subclass.TinyNet()
    model(np.zeros((1, 16), "float32"))
    path = tmp_path / "sub.keras"
    model.save(path)
    # as in a fresh process: the user's module is not imported, so its class is not registered
    monkeypatch.delitem(keras.saving.get_custom_objects(), f"{keras_subclass.PACKAGE}>TinyNet")
    monkeypatch.delitem(sys.modules, "tests.cli.keras_subclass")
    code, _, err = run(capsys, "report", str(path))
    assert code == 2
    assert "Keras cannot find the class 'TinyNet' the model was saved with; pass --import MODULE (repeatable) " \
           "naming the module that defines it and registers it with @keras.saving.register_keras_serializable " \
           "(it was saved from tests.cli.keras_subclass)" in one_line_error(err, "report")
    code, out, err = run(capsys, "report", str(path), "--import", "tests.cli.keras_subclass")
    assert code == 0, err
    assert [r[:3] for r in table(out)] == [["fc", "8x16", "128"], ["head", "2x8", "16"]]
    code, _, err = run(capsys, "report", str(path), "--import", "json", "--import", "no_such_module_xyz")
    assert code == 2 and "--import 'no_such_module_xyz': cannot import 'no_such_module_xyz'" in err


def test_report_import_of_a_module_that_raises(tmp_path, capsys, monkeypatch, torch_model):
    import torch
    (tmp_path / "raising_module.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(torch_model.state_dict(), tmp_path / "m.pt")
    code, _, err = run(capsys, "report", str(tmp_path / "m.pt"), "--import", "raising_module")
    assert code == 2
    assert "--import 'raising_module': importing 'raising_module' failed: RuntimeError: no GPU here" in err


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])  # mixed: LossScaleOptimizer wraps ours
def test_report_keras_mid_pruning_checkpoint(tmp_path, capsys, policy):
    keras = pytest.importorskip("keras")
    nk = pytest.importorskip("nc_prune.keras")
    import numpy as np
    from nc_prune import WeightPruningConfig
    from tests.cli.models import keras_cnn
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(policy)
    try:
        model = keras_cnn()
        model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=False)
    finally:
        keras.config.set_dtype_policy("float32")
    cb = nk.prepare_pruning(model, WeightPruningConfig(pattern="4x1", target_sparsity=0.5, start_step=0,
                                                       end_step=4, pruning_frequency=2, pruning_type="magnitude"))
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 8, 8, 3), "float32"), rng.random((12, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[cb])  # 3 steps
    path = tmp_path / "mid.keras"
    model.save(path)
    code, out, err = run(capsys, "report", str(path))
    assert code == 0, err
    step = cb.optimizer.prune_step  # 3, less any step the loss scaler skipped (not counted, as in torch)
    assert step in (2, 3) and cb.global_step == step
    assert f"; saved during pruning at step {step} (masks still attached; nc_prune.keras.strip(model) before export)" \
        in out.splitlines()[0]
    assert out.splitlines()[-1].split()[2] == f"{nk.sparsity_report(model).total_zeros:,}"
    assert out.splitlines()[1:] == str(cb.report()).splitlines()  # the live table, patterns, units and notes
    assert "4x1" in out and "classifier head" in out
    nk.strip(model)
    model.save(path)
    code, out, _ = run(capsys, "report", str(path))
    assert code == 0 and "saved during pruning" not in out


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


def test_report_of_a_state_dict_saved_during_pruning_is_the_live_report(capsys, tmp_path):
    """GPT-2 (tied head, transformers Conv1D stored (in, out)): the file's table is pruning.report()'s — canonical
    shapes, only the prunable layers, patterns and unit counts, the dense layers' notes — from the same code."""
    import warnings

    import torch
    transformers = pytest.importorskip("transformers")
    from nc_prune import WeightPruningConfig
    from nc_prune.torch import prepare_pruning
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0))
        pruning = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1",
                                                             target_sparsity=0.5, op_names=[".*"]),
                                  dataloader=[{"input_ids": torch.randint(0, 100, (2, 8))}])
    path = tmp_path / "gpt2.pt"
    torch.save(model.state_dict(), path)
    code, out, _ = run(capsys, "report", str(path))
    assert code == 0
    live = str(pruning.report())
    assert out.splitlines()[1:] == live.splitlines()
    assert any(line.split()[:2] == ["transformer.h.0.attn.c_attn", "96x32"] for line in live.splitlines())
    assert not any(line.startswith("transformer.wte") for line in live.splitlines())
    assert any(line.startswith("lm_head") and "weight shared with transformer.wte.weight" in line
               for line in live.splitlines())
    code, out, _ = run(capsys, "report", str(path), "--json")
    assert json.loads(out) == pruning.report().to_dict()
