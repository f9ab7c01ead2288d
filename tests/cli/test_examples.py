"""Every script in examples/ runs on small sizes (``--quick``) in a fresh process, and says what it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "NC_PRUNE_PROGRESS": "0",
       "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}

# lines each of our examples must print (the numbers are exact: they follow from the configs)
EXPECTED = {
    "torch_train_prune.py": ["4x1, target 85%: accuracy", "2:4, target 50%: accuracy",
                             "total             13,584  10,880    80.09%", "total             13,584  6,400    47.11%"],
    "oneshot_transformer.py": ["2:4 at 50% on the blocks", "4x1 at 50% on the blocks",
                               "total                  99,456  49,152    49.42%"],
    "custom_pruner_pattern.py": ["conv2  16x8x3x3   1,152    576    50.00%  kernel", "LAMP pruned fc1",
                                 "Keras: the same masks, bit for bit"],
    "hf_trainer_pruning.py": ["total                                                69,760  34,816    49.91%",
                              "pruning step 40 = Trainer global_step 40",
                              "the same weights, masks and step bit for bit: True",
                              "saved and reloaded with from_pretrained: 34,816 zeros"],
    "ddp_pruning.py": ["total          6,400  3,072    48.00%           768/1,536 (50.0%)",
                       "resumed at step 20, ended at step 40", "masks identical on all 2 ranks: True",
                       "resumed run equals the uninterrupted run bit for bit: True"],
}


def test_the_promised_examples_exist():
    assert set(EXPECTED) <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_quick(script):
    r = subprocess.run([sys.executable, str(script), "--quick"], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for line in EXPECTED.get(script.name, []):
        assert line in r.stdout, (line, r.stdout[-3000:])
