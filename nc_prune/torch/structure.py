"""What spans layers in a torch model: attention heads and FFN channels, as the core's couplings.

Found by the modules' own structure, for the attention and MLP blocks of ``transformers`` (BERT, GPT-2,
OPT, Llama and the many models built the same way) and ``torch.nn.MultiheadAttention``:

* an attention module with ``q/k/v`` projections and an output projection (``o_proj`` / ``out_proj``;
  BERT's ``attention.self`` with ``attention.output.dense``; GPT-2's fused ``c_attn`` with ``c_proj``);
  its head count and width come from its attributes or the model's config. With grouped-query attention
  a unit is a KV head with the query heads that share it (``parameters={"gqa_heads": "kv"}``, the default);
  ``"query"`` makes every query head a unit, the KV heads untouched, and in local scope each KV group
  then loses as many query heads as the others (the model stays uniform);
* an FFN: an up projection (and a gate) whose outputs only an element-wise function separates from the
  down projection that reads them — Llama's ``gate_proj``/``up_proj``/``down_proj``, OPT's ``fc1``/``fc2``,
  GPT-2's ``c_fc``/``c_proj``, BERT's ``intermediate.dense``/``output.dense``.

Each is described once (:class:`Attention`, :class:`FFN`) — slimming removes what the couplings prune,
from the same descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..core.coupling import Coupling, Slice
from .layers import TorchTarget


@dataclass(frozen=True)
class Attention:
    """One attention module: its projections (layer names), head count, KV head count and head width.

    ``qkv`` names the fused projection (GPT-2's ``c_attn``, MHA's ``in_proj_weight``) when there is one, and
    ``q``/``k``/``v`` are then all that name.
    """

    name: str
    q: str
    k: str
    v: str
    o: str
    heads: int
    kv_heads: int
    head_dim: int
    fused: bool = False

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    def couplings(self, mode: str = "kv") -> List[Coupling]:
        d, g = self.head_dim, self.group
        if self.fused:  # q, k, v stacked in one weight: three slices of it
            width = self.heads * d
            return [Coupling(f"{self.name} heads", "head", self.heads,
                             (Slice(self.q, "out", d, 0), Slice(self.q, "out", d, width),
                              Slice(self.q, "out", d, 2 * width), Slice(self.o, "in", d)), (self.q, self.o))]
        if mode == "query" and g > 1:  # each KV group a coupling of its query heads: local scope keeps them even
            return [Coupling(f"{self.name} query heads of KV head {j}", "head", g,
                             (Slice(self.q, "out", d, j * g * d), Slice(self.o, "in", d, j * g * d)),
                             (self.q, self.k, self.v, self.o))
                    for j in range(self.kv_heads)]
        return [Coupling(f"{self.name} heads", "head", self.kv_heads,
                         (Slice(self.q, "out", g * d), Slice(self.k, "out", d), Slice(self.v, "out", d),
                          Slice(self.o, "in", g * d)), (self.q, self.k, self.v, self.o))]


@dataclass(frozen=True)
class FFN:
    """One feed-forward block: the projections writing its inner channels, and the one reading them."""

    name: str
    up: Tuple[str, ...]
    down: str
    inner: int

    def coupling(self) -> Coupling:
        return Coupling(f"{self.name} channels", "channel", self.inner,
                        tuple(Slice(u, "out") for u in self.up) + (Slice(self.down, "in"),), self.up + (self.down,))


def _join(prefix: str, child: str) -> str:
    return f"{prefix}.{child}" if prefix else child


def _config_int(model: nn.Module, module: nn.Module, *names: str) -> Optional[int]:
    for owner in (module, getattr(module, "config", None), getattr(model, "config", None)):
        for n in names:
            v = getattr(owner, n, None) if owner is not None else None
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def find_attention(model: nn.Module, targets: Dict[str, TorchTarget]) -> List[Attention]:
    """Every attention module whose projections are all prunable targets."""
    out = []
    for name, module in model.named_modules():
        kids = dict(module.named_children())
        found = None
        if {"q_proj", "k_proj", "v_proj"} <= set(kids) and ({"o_proj"} & set(kids) or {"out_proj"} & set(kids)):
            o = "o_proj" if "o_proj" in kids else "out_proj"
            names = [_join(name, c) for c in ("q_proj", "k_proj", "v_proj", o)]
            heads = _config_int(model, module, "num_heads", "num_attention_heads")
            d = _config_int(model, module, "head_dim")
            q_rows, k_rows = kids["q_proj"].weight.shape[0], kids["k_proj"].weight.shape[0]
            if heads is None and d:
                heads = q_rows // d
            d = d or (q_rows // heads if heads else None)
            if heads and d and q_rows == heads * d and k_rows % d == 0:
                found = Attention(name, *names, heads=heads, kv_heads=k_rows // d, head_dim=d)
        elif {"c_attn", "c_proj"} <= set(kids) and hasattr(module, "num_heads"):
            heads = module.num_heads
            rows = targets.get(_join(name, "c_attn"))
            if rows is not None:
                width = rows.canonical(rows.weight).shape[0] // 3
                qkv = _join(name, "c_attn")
                found = Attention(name, qkv, qkv, qkv, _join(name, "c_proj"), heads, heads, width // heads, fused=True)
        elif {"self", "output"} <= set(kids) and {"query", "key", "value"} <= set(dict(kids["self"].named_children())):
            s = kids["self"]
            heads = _config_int(model, s, "num_attention_heads", "num_heads")
            d = _config_int(model, s, "attention_head_size", "head_dim")
            names = [_join(name, f"self.{c}") for c in ("query", "key", "value")] + [_join(name, "output.dense")]
            if heads and d:
                found = Attention(name, *names, heads=heads, kv_heads=heads, head_dim=d)
        elif isinstance(module, nn.MultiheadAttention) and _join(name, "in_proj_weight") in targets:
            d = module.embed_dim // module.num_heads
            qkv = _join(name, "in_proj_weight")
            found = Attention(name, qkv, qkv, qkv, _join(name, "out_proj"), module.num_heads, module.num_heads, d,
                              fused=True)
        if found is not None and all(n in targets for n in (found.q, found.k, found.v, found.o)):
            out.append(found)
    return out


_FFN_NAMES: Sequence[Tuple[Tuple[str, ...], str]] = (
    (("gate_proj", "up_proj"), "down_proj"), (("w1", "w3"), "w2"), (("fc1",), "fc2"), (("c_fc",), "c_proj"),
    (("up_proj",), "down_proj"), (("intermediate.dense",), "output.dense"), (("dense_h_to_4h",), "dense_4h_to_h"),
)


def find_ffns(model: nn.Module, targets: Dict[str, TorchTarget], attention: Sequence[Attention] = ()) -> List[FFN]:
    """Every FFN whose projections are prunable targets of matching inner size (and not an attention's)."""
    taken = {n for a in attention for n in (a.q, a.k, a.v, a.o)}
    out, seen = [], set()
    for name, module in model.named_modules():
        for ups, down in _FFN_NAMES:
            names = [_join(name, u) for u in ups]
            d = _join(name, down)
            if d in seen or not all(n in targets for n in names + [d]) or taken & set(names + [d]):
                continue
            inner = {targets[n].canonical(targets[n].weight).shape[0] for n in names}
            reads = targets[d].canonical(targets[d].weight).shape[1]
            if len(inner) == 1 and inner == {reads}:
                out.append(FFN(name, tuple(names), d, reads))
                seen.add(d)
    return out


def find_couplings(model: nn.Module, targets: Dict[str, TorchTarget], gqa_heads: str = "kv") -> List[Coupling]:
    """The heads of every attention module, the channels of every FFN, and — for a model ``torch.fx`` can trace —
    the channel groups of its other layers (conv filters with their readers, across residual additions)."""
    from .graph import conv_couplings
    attention = find_attention(model, targets)
    named = [c for a in attention for c in a.couplings(gqa_heads)]
    named += [f.coupling() for f in find_ffns(model, targets, attention)]
    covered = {layer for c in named for layer in c.layers}
    return named + [c for c in conv_couplings(model, covered) if all(layer in targets for layer in c.layers)]
