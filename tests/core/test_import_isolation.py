"""The core engine imports numpy and the standard library only: no deep-learning framework."""

import json
import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")


@pytest.mark.parametrize("module", ["nc_prune", "nc_prune.core"])
def test_import_pulls_in_no_framework(module):
    code = (
        "import json, sys\n"
        f"import {module}\n"
        f"import {module} as m\n"
        "m.compute_masks({'fc': __import__('numpy').arange(8.0).reshape(2, 4)}, '2:4', 0.5)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loaded {loaded}"


def test_the_demo_does_not_import_the_cli():
    code = "import sys, nc_prune.demo.runner\nprint('nc_prune.cli' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
