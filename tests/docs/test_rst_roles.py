"""The docs' griffe extension: Sphinx roles become optional API links, doctests become code blocks."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .samples import ROOT

pytest.importorskip("griffe", reason="griffe comes with mkdocstrings[python] (the dev extra)")


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("rst_roles", ROOT / "docs" / "_ext" / "rst_roles.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rst_roles", module)
    spec.loader.exec_module(module)
    return module


def test_roles_become_optional_autorefs(ext):
    text = "See :class:`~nc_prune.core.report.SparsityReport`, :func:`nc_prune.compute_masks` and :class:`Pattern`."
    assert ext.rewrite(text) == (
        'See <autoref identifier="nc_prune.core.report.SparsityReport" optional><code>SparsityReport</code></autoref>, '
        '<autoref identifier="nc_prune.compute_masks" optional><code>nc_prune.compute_masks</code></autoref> and '
        "`Pattern`.")


def test_doctests_are_fenced_but_code_blocks_are_left_alone(ext):
    text = "Intro.\n\n>>> x = [1]\n>>> x\n[1]\n\nMore.\n\n    >>> indented\n\n```python\n>>> fenced\n```\n>>> last"
    assert ext.fence_doctests(text).splitlines() == [
        "Intro.", "", "```pycon", ">>> x = [1]", ">>> x", "[1]", "```", "", "More.", "", "    >>> indented", "",
        "```python", ">>> fenced", "```", "```pycon", ">>> last", "```"]
