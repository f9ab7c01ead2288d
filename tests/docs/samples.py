"""Finding and running the ```python blocks of the README and the docs.

Convention (see docs/index.md, "About the code samples"): every ```python block runs, in page order, in
one namespace per page, in a fresh temporary directory. A block right after a line ``<!-- no-run -->``
is skipped — use it only for fragments that cannot run on their own (a training loop's skeleton).
A block whose first line starts with ``>>>`` is run as a doctest, so its printed output is checked too.
"""

from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    run: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_doctest(self) -> bool:
        return self.code.lstrip().startswith(">>>")


def sample_files() -> List[Path]:
    """README.md and every Markdown page of docs/ (not docs/_ext)."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_ext" not in p.parts)
    return [ROOT / "README.md"] + docs


def blocks_of(path: Path, text: str | None = None) -> List[Block]:
    text = path.read_text(encoding="utf-8") if text is None else text
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        previous = next((l.strip() for l in reversed(before) if l.strip()), "")
        line = text.count("\n", 0, m.start("code")) + 1
        out.append(Block(path, line, m["code"], previous != NO_RUN))
    return out


def run_block(block: Block, namespace: Dict[str, object]) -> None:
    """Run one block in ``namespace``; raise AssertionError naming the block when it fails."""
    if block.is_doctest:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.code, namespace, block.where, str(block.path), block.line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out: List[str] = []
        runner.run(test, out=out.append, clear_globs=False)
        if runner.failures:
            raise AssertionError(f"doctest failed in {block.where}:\n" + "".join(out))
        return
    # pad so tracebacks show the line numbers of the Markdown file
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    exec(code, namespace)  # noqa: S102 - running the docs' own samples is the point of this test
