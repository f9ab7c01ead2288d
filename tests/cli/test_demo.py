"""The demo on tiny sizes: exact sparsity, schedule followed step by step, files written, README command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from nc_prune import sparsity_at  # noqa: E402
from nc_prune.cli import main  # noqa: E402
from nc_prune.core.selection import count_for_ratio  # noqa: E402
from nc_prune.demo import FrameworkUnavailable, run_demo  # noqa: E402
from nc_prune.demo import keras_part  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "NC_PRUNE_PROGRESS": "0",
       "OMP_NUM_THREADS": "1"}
# units of the pruned layers: conv2 (32, 16*9) and fc1 (64, 128)
BLOCKS_4X1 = 32 // 4 * 144 + 64 // 4 * 128  # 1,152 + 2,048 = 3,200 blocks of 4
GROUPS_2IN4 = 32 * 144 // 4 + 64 * 128 // 4  # 3,200 groups of 4


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(str(out), quick=True, frameworks=["torch"], show_progress=False)
    return out, result


def test_torch_demo_reaches_the_targets_exactly(torch_run):
    _, result = torch_run
    assert result.skipped == {}
    r4, r24 = result.runs
    assert (r4.recipe.pattern, r24.recipe.pattern) == ("4x1", "2:4")
    assert r4.report.total_zeros == 4 * count_for_ratio(BLOCKS_4X1, 0.85) == 10880
    assert r24.report.total_zeros == 2 * GROUPS_2IN4 == 6400
    for run in (r4, r24):
        assert run.report["conv1"].zeros == 0 and run.report["fc2"].zeros == 0  # excluded, and the head
        assert 0.0 <= run.dense_accuracy <= 1.0 and 0.0 <= run.accuracy <= 1.0
    fc1 = r24.mask.reshape(64, 32, 4)  # 2:4: every group of 4 inputs keeps exactly 2
    assert (fc1.sum(axis=-1) == 2).all()
    blocks = r4.mask.reshape(16, 4, 128)  # 4x1: whole blocks of 4 rows
    assert (blocks.all(axis=1) == blocks.any(axis=1)).all()


def test_measured_sparsity_follows_the_schedule_step_by_step(torch_run):
    _, result = torch_run
    for run, units, per_unit, scale in ((result.runs[0], BLOCKS_4X1, 4, 1.0), (result.runs[1], GROUPS_2IN4, 2, 2.0)):
        g = run.config.groups[0]
        steps = [s for s, _ in run.trace]
        assert steps == list(range(len(steps))) and len(steps) > g["end_step"]
        for step, measured in run.trace:
            planned = sparsity_at(step, g["start_step"], g["end_step"], g["pruning_frequency"],
                                  g["target_sparsity"], g["sparsity_decay_type"])
            expected = per_unit * count_for_ratio(units, min(1.0, planned * scale)) / (4 * units)
            assert measured == pytest.approx(expected, abs=1e-12), step


def test_files_are_written_and_checkpoints_are_plain(torch_run, capsys):
    import torch
    out, result = torch_run
    names = sorted(os.path.basename(f) for f in result.files)
    assert names == ["layer_sparsity.png", "masks.png", "schedule.png", "torch_2in4.pt", "torch_4x1.pt"]
    for png in ("layer_sparsity.png", "masks.png", "schedule.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    from nc_prune.demo.torch_part import DigitsCNN
    state = torch.load(out / "torch_4x1.pt")
    DigitsCNN().load_state_dict(state)  # strict: strip() left a plain model
    assert main(["report", str(out / "torch_4x1.pt")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[1:3] == ["13,584", "10,880"]


def test_summary_lines(torch_run):
    _, result = torch_run
    lines = result.summary().splitlines()
    assert lines[0].split()[:3] == ["framework", "pruning", "target"]
    assert lines[2].split()[:8] == ["torch", "4x1", "blocks", "(snip_momentum)", "85%", "85.0%", "80.1%",
                                    f"{result.runs[0].dense_accuracy:.1%}"]
    assert lines[3].split()[4:7] == ["50%", "50.0%", "47.1%"]


@pytest.fixture
def tiny_sizes(monkeypatch):
    """--quick made smaller still, for tests of the command's behaviour rather than its numbers."""
    from nc_prune.demo.recipe import DemoSizes
    monkeypatch.setattr(DemoSizes, "quick", classmethod(lambda cls: cls(dense_epochs=1, prune_epochs=1, limit=120)))


def test_keras_missing_is_reported_and_torch_still_counts(tmp_path, capsys, monkeypatch, tiny_sizes):
    def unavailable():
        raise FrameworkUnavailable("the nc_prune Keras backend cannot be imported (test)")

    monkeypatch.setattr(keras_part, "_keras", unavailable)
    code = main(["demo", "--quick", "--no-plots", "--no-progress", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "[keras] skipped: the nc_prune Keras backend cannot be imported (test)" in out
    assert "torch      4x1 blocks" in out
    code = main(["demo", "--quick", "--framework", "keras", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("nc-prune demo: error: the keras part of the demo could not run: the nc_prune Keras backend "
                   "cannot be imported (test)\n")


def test_progress_bars_on_request_and_silenced_by_no_progress(tmp_path, capsys, monkeypatch, tiny_sizes):
    monkeypatch.setenv("NC_PRUNE_PROGRESS", "1")  # capsys is not a terminal: force the bars on
    assert main(["demo", "--quick", "--framework", "torch", "--no-plots", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "\r[torch] dense training |########################| 3/3 [" in err
    assert "\r[torch] pruning 4x1 → 85% |" in err
    assert main(["demo", "--quick", "--framework", "torch", "--no-plots", "--no-progress", "--out",
                 str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""


def test_the_readme_demo_command_runs(tmp_path):
    """`bash scripts/demo.sh` as in the README, both frameworks, in a fresh process: it prints the README's table."""
    stamp = ROOT / ".venv" / ".nc_prune-installed"
    if not stamp.exists() or stamp.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        pytest.skip("the project environment is not set up yet (bash scripts/test.sh sets it up, then this runs)")
    r = subprocess.run(["bash", "scripts/demo.sh", "--out", str(tmp_path)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = r.stdout[r.stdout.index("Summary"):].splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    promised = readme[readme.index("```text\nframework  pruning") + len("```text\n"):].split("```")[0].splitlines()
    assert summary[1:1 + len(promised)] == promised  # every figure, accuracies too: the demo is deterministic
    rows = [l.split() for l in summary if l.startswith(("torch ", "keras "))]
    assert [(row[0], row[1], row[5]) for row in rows] == [
        ("torch", "4x1", "85.0%"), ("torch", "2:4", "50.0%"), ("keras", "4x1", "85.0%"), ("keras", "2:4", "50.0%")]
    for name in ("torch_4x1.pt", "torch_2in4.pt", "keras_4x1.keras", "keras_2in4.keras", "schedule.png",
                 "layer_sparsity.png", "masks.png"):
        assert (tmp_path / name).is_file(), name
    keras_report = subprocess.run([sys.executable, "-m", "nc_prune", "report", str(tmp_path / "keras_2in4.keras")],
                                  cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert keras_report.returncode == 0, keras_report.stderr
    assert keras_report.stdout.splitlines()[-1].split()[1:3] == ["13,584", "6,400"]
    ratios = np.array([[float(x.rstrip("%")) for x in row[5:7]] for row in rows])  # pruned layers, whole model
    assert ratios[:, 1].tolist() == [80.1, 47.1, 80.1, 47.1]
