"""Every code sample of README.md and docs/ runs (see samples.py for the convention)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest

from nc_prune.core import registry

from .samples import ROOT, Block, blocks_of, run_block, sample_files

FILES = [p for p in sample_files() if any(b.run for b in blocks_of(p))]


@pytest.fixture
def clean_registries():
    """Samples register patterns and pruners; leave the registries as they were."""
    regs = [getattr(registry, n) for n in ("PATTERNS", "PRUNERS", "CRITERIA", "SCHEDULERS", "SPARSITY_DECAYS",
                                           "REGULARIZERS")]
    saved = [dict(r._items) for r in regs]
    yield
    for r, items in zip(regs, saved):
        r._items.clear()
        r._items.update(items)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_samples_run(path: Path, tmp_path, monkeypatch, clean_registries):
    blocks = [b for b in blocks_of(path) if b.run]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NC_PRUNE_PROGRESS", "0")
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    namespace: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for block in blocks:
            run_block(block, namespace)


def test_readme_has_the_promised_samples():
    """The README shows a PyTorch and a Keras example, and both run (none is marked no-run)."""
    blocks = blocks_of(ROOT / "README.md")
    runnable = [b.code for b in blocks if b.run]
    assert any("nc_prune.torch" in c for c in runnable)
    assert any("nc_prune.keras" in c for c in runnable)


def test_extractor_finds_blocks_and_honours_no_run(tmp_path):
    text = ("# t\n\n```python\nx = 1\n```\n\n<!-- no-run -->\n```python\nraise SystemExit\n```\n\n"
            "```bash\nls\n```\n\n```python\n>>> x + 1\n2\n```\n")
    path = ROOT / "x.md"
    blocks = blocks_of(path, text)
    assert [(b.line, b.run, b.is_doctest) for b in blocks] == [(4, True, False), (9, False, False), (17, True, True)]
    ns: dict = {}
    for b in blocks:
        if b.run:
            run_block(b, ns)
    assert ns["x"] == 1


def test_failing_sample_names_its_line():
    bad = Block(ROOT / "README.md", 7, "assert 1 == 2\n", True)
    with pytest.raises(AssertionError) as info:
        run_block(bad, {})
    assert info.traceback[-1].lineno + 1 == 7  # pytest line numbers are 0-based
    wrong = Block(ROOT / "README.md", 3, ">>> 1 + 1\n3\n", True)
    with pytest.raises(AssertionError, match="README.md:3"):
        run_block(wrong, {})
