"""The Keras example runs end to end (quick mode) and states what it claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_example_prunes_digits_cnn_to_85_percent_4x1_and_2_4(tmp_path):
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "keras_train_prune.py"), "--quick",
                          "--json", str(tmp_path / "r.json"), "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {r["run"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert runs["4x1"]["pruned_layer_sparsity"] == 0.85
    assert runs["2:4"]["pruned_layer_sparsity"] == 0.5
    assert runs["2:4"]["layers"]["conv1"] == 0.0 and runs["2:4"]["layers"]["classifier"] == 0.0
    for name in ("dense", "4x1", "2:4"):
        assert runs[name]["accuracy_after"] > 0.9, runs[name]  # digits: a dense CNN reaches ~98%
    for name in ("4x1", "2:4"):
        assert runs[name]["accuracy_reloaded"] == runs[name]["accuracy_after"]  # the stripped .keras file
        assert Path(runs[name]["saved"]).exists()
    assert "accuracy before" in out.stdout
