"""The same backend code on Keras's torch backend, in a subprocess (Keras picks its backend at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


JAX_REFUSALS = r"""
import json, sys, numpy as np, keras
import nc_prune.keras as nk
from nc_prune import WeightPruningConfig
from nc_prune.core.errors import PruningStateError
out = {}
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="fc"), keras.layers.Dense(4)])
model.compile("sgd", "mse")
try:
    nk.prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5))
except PruningStateError as exc:
    out["prepare"] = str(exc)
loaded = keras.models.load_model(sys.argv[1])  # saved mid-pruning on TensorFlow
try:
    loaded.fit(np.ones((8, 16), "float32"), np.ones((8, 4), "float32"), verbose=0)
except PruningStateError as exc:
    out["fit"] = str(exc)
print(json.dumps(out))
"""


def test_the_jax_backend_is_refused_with_the_reason_until_it_is_supported(tmp_path):
    pytest.importorskip("jax")
    import keras

    from nc_prune import WeightPruningConfig
    from nc_prune.keras import prepare_pruning
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="fc"), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    cb = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5))
    model.fit(np.ones((8, 16), "float32"), np.ones((8, 4), "float32"), verbose=0, callbacks=[cb])
    model.save(tmp_path / "mid.keras")
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", JAX_REFUSALS, str(tmp_path / "mid.keras")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(got) == {"prepare", "fit"}
    for message in got.values():
        assert "JAX backend" in message and "KERAS_BACKEND=tensorflow or torch" in message
