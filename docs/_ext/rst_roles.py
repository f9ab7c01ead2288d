"""A griffe extension for the API pages: Sphinx roles in docstrings become links.

nc_prune's docstrings name other objects the Sphinx way (``:class:`~nc_prune.WeightPruningConfig```).
mkdocstrings reads Markdown, so this rewrites each role into an *optional* mkdocs-autorefs reference:
a link when the target is documented on the site, plain code otherwise.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`")


def fence_doctests(text: str) -> str:
    """Put ``>>>`` examples (and their output, up to a blank line) in fenced ``pycon`` blocks.

    Without a fence Markdown reads ``>>>`` as a quote and ``[...]`` in the output as links. Examples
    indented by 4 or more are already code blocks, and fenced blocks are left as they are.
    """
    out: list = []
    example_indent = None  # indentation of the open example, or None
    in_fence = False
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if example_indent is None and stripped.startswith("```"):
            in_fence = not in_fence
        elif example_indent is None and not in_fence and indent < 4 and stripped.startswith(">>>"):
            example_indent = indent
            out.append(" " * indent + "```pycon")
        elif example_indent is not None and not stripped:
            out.append(" " * example_indent + "```")
            example_indent = None
        out.append(line)
    if example_indent is not None:
        out.append(" " * example_indent + "```")
    return "\n".join(out)


def rewrite(text: str) -> str:
    """Fence doctests, and ``:class:`~a.b.C``` → ``<autoref identifier="a.b.C" optional><code>C</code></autoref>``."""
    text = fence_doctests(text)

    def repl(m: "re.Match[str]") -> str:
        target = m["target"]
        title = target.rsplit(".", 1)[-1] if m["tilde"] else target
        if "." not in target:
            return f"`{title}`"
        return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'

    return ROLE.sub(repl, text)


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring before it is rendered."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
