"""The same backend code on Keras's torch backend, in a subprocess (Keras picks its backend at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["torch"])
def test_backend_subset(backend, tmp_path):
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "keras" / "backend_check.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {
        "backend": backend,
        "names": ["conv", "dw", "mha/attention_output", "mha/key", "mha/query", "mha/value", "proj"],
        "one_shot_equals_core": True,
        "snip_scores": True,
        "snip_masks": True,
        "resume_step": 16,
        "resumed": True,
        "nm_zeros_per_group": [2],
        "stripped_optimizer": "Adam",
    }
