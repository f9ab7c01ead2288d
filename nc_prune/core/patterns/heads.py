"""``"mha"`` (alias ``"head"``): whole attention heads — rows of q, k and v and columns of o, together.

A head is a :class:`~nc_prune.core.coupling.Coupling` the backend finds in the model (see
``nc_prune.torch.structure``); the pattern itself has no unit inside a single layer, so a selected layer
that is not part of an attention module's heads is left dense with that reason. Every criterion scores a
head by reducing its weights' scores over q, k, v and o (``criterion_reduce_type``), and global scope ranks
heads of all attention modules together.

``parameters["gqa_heads"]``: with grouped-query attention, ``"kv"`` (default) prunes a KV head together
with the query heads that share it; ``"query"`` prunes query heads only, and with ``pruning_scope="local"``
every KV group of an attention module loses as many as the others.
"""

from __future__ import annotations

from typing import Tuple

from ..errors import PatternShapeError
from ..parameters import Param, choice
from ..registry import register_pattern
from .base import LayerUnits, Pattern

HEAD_KINDS = ("head",)


@register_pattern("head")
@register_pattern("mha")
class PatternHeads(Pattern):
    """Whole attention heads (INC's ``pattern="mha"``), ranked as units spanning q, k, v and o."""

    coupled_kind = "head"
    PARAMETERS = {"gqa_heads": Param("kv", choice("kv", "query"),
                                     "grouped-query attention: prune KV heads with their query heads, or query heads")}

    def prunes_coupling(self, coupling, selected) -> bool:
        return coupling.kind == "head" and bool(set(coupling.anchors) & set(selected))

    def units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        raise PatternShapeError(f"layer {name!r} is not part of an attention module's heads (q, k, v and the output "
                                f"projection), so pattern {self.pattern!r} has nothing to prune in it alone")
