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


def rewrite(text: str) -> str:
    """``:class:`~a.b.C``` → ``<autoref identifier="a.b.C" optional><code>C</code></autoref>``."""

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
