"""The documentation site builds with ``mkdocs build --strict``: broken links, anchors and references fail."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from .samples import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings[python] are not installed (pip install 'nc-prune[dev]')",
)


def _build(site_dir, config="mkdocs.yml"):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_site_builds_strict(tmp_path):
    result = _build(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "site" / "api" / "core" / "index.html").read_text(encoding="utf-8")
    # API pages are generated from the docstrings
    assert 'id="nc_prune.core.config.WeightPruningConfig"' in html
    assert "INC 2.x keys with their defaults" in html or "Pruning settings in INC 2.x form" in html
    for page in ("index.html", "cli/index.html", "configs/index.html", "torch/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def _our_config_with(tmp_path, page_text: str):
    """mkdocs.yml as it is, over a copy of docs/ whose index.md ends with ``page_text``."""
    import yaml
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    index = docs / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\n" + page_text + "\n", encoding="utf-8")
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    cfg["docs_dir"] = str(docs)
    for plugin in cfg["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT)]
            python["options"]["extensions"] = [str(ROOT / e) for e in python["options"]["extensions"]]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("broken,named", [
    ("See [the missing page](missing.md).", "missing.md"),
    ("See [the anchor](configs.md#no-such-section).", "no-such-section"),
    ("Use [the config][nc_prune.NoSuchThing].", "nc_prune.NoSuchThing"),
])
def test_broken_reference_fails_the_build(tmp_path, broken, named):
    """The strict build is not a formality: one broken link, anchor or API reference fails it."""
    result = _build(tmp_path / "site", _our_config_with(tmp_path, broken))
    assert result.returncode != 0, result.stdout + result.stderr
    assert named in result.stdout + result.stderr


def _slug(heading: str) -> str:
    """The anchor MkDocs (and GitHub) gives a heading: lower case, punctuation dropped, spaces → '-'."""
    import re
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-")


def test_readme_links_point_at_files_and_headings():
    """README.md is not part of the site, so its links are checked here: every relative link resolves."""
    import re
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [l for l in links if not re.match(r"[a-z]+://", l)]
    assert len(local) >= 10
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), link
        if anchor:
            headings = [l.lstrip("#") for l in target.read_text(encoding="utf-8").splitlines() if l.startswith("#")]
            assert anchor in {_slug(h) for h in headings}, link
