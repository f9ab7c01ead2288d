"""The same backend code on Keras's JAX and torch backends, in subprocesses (Keras picks its backend at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="spawns the other backends; run once, from the TensorFlow process")
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


#: The backend-sensitive modules (training, save/strip, errors, custom loop), run whole under each other backend,
#: one pytest process per backend; the whole suite runs on TensorFlow. The rest (layout, discovery, slim, report,
#: doctests) is backend-independent numpy and Keras structure, or uses tf.GradientTape for its reference gradients.
BACKEND_MODULES = ["test_backend_fit.py", "test_training.py", "test_save_strip.py", "test_errors.py",
                   "test_custom_loop.py", "test_steps_per_execution.py"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="spawns the other backends; run once, from the TensorFlow process")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_backend_sensitive_modules_pass_on(backend):
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    here = ROOT / "tests" / "keras"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                          *[str(here / m) for m in BACKEND_MODULES]],
                         capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.splitlines()[-1]


def test_the_same_weights_and_data_give_identical_masks_on_tensorflow_jax_and_torch(tmp_path):
    masks = {}
    for backend in ("tensorflow", "jax", "torch"):
        pytest.importorskip(backend)
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
        out = tmp_path / f"{backend}.npz"
        run = subprocess.run([sys.executable, str(ROOT / "tests" / "keras" / "backend_masks.py"), str(out)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-4000:]
        with np.load(out) as f:
            assert str(f["backend"]) == backend
            masks[backend] = {k: f[k] for k in f.files if k != "backend"}
    tf_masks = masks["tensorflow"]
    assert len(tf_masks) == 24
    for backend in ("jax", "torch"):
        assert sorted(masks[backend]) == sorted(tf_masks)
        for key, mask in tf_masks.items():
            np.testing.assert_array_equal(masks[backend][key], mask, err_msg=f"{backend}: {key}")
    pruned = {case: sum(int((~m).sum()) for k, m in tf_masks.items() if k.startswith(case + "/"))
              for case in {k.split("/")[0] for k in tf_masks}}
    assert pruned == {"mixed_magnitude_4x1_global": 1024, "mixed_magnitude_2in4_local": 784,
                      "mixed_magnitude_channelx1_local": 784, "mlp_snip_4x1_global": 768,
                      "mlp_snip_momentum_1x1_global": 1075}
