"""``model_slim``: physically remove pruned heads and FFN channels, so the model is really smaller and faster.

Zeros alone make no model faster on a CPU. Once whole heads or channels are zero — pruned with
``pattern="mha"``, with ``channelx1`` on a down projection or ``1xchannel`` on an up projection (coupled
units), by the ``prune`` drop-in or by ``PruneImplBase`` — :func:`model_slim` cuts them out: q, k and v rows
and o columns of each removed head (a KV head with its query heads under grouped-query attention), the up
and gate rows and the down column of each removed FFN channel, with their biases, and it updates the
modules' head counts and the model's config.

A unit is removed only when removing it cannot change the output — an FFN channel whose column of the down
projection is zero, a head whose columns of the output projection are zero — so the slimmed model's
outputs equal the masked model's up to float summation order (tested). What cannot be cut safely is
refused with the reason and the model is left as it was: every module is checked before any is changed.

For models ``torch.fx`` can trace, the same goes for conv filters and the channels of Linear chains: a
channel of a traced group (:mod:`nc_prune.torch.graph`: producers, their BatchNorm, residual additions,
depthwise convs, readers) goes when every reader's input for it is zero — the producers' rows, the
BatchNorm entries, the depthwise filters and the readers' input channels together.
:func:`load_slimmed_state` loads such a model's ``state_dict`` into a fresh copy of the architecture.

A slimmed ``transformers`` model saves with ``save_pretrained``. Where the config can express the result
(the same sizes in every layer, a config with ``head_dim`` when heads go — Llama-style), plain
``from_pretrained`` loads it; elsewhere (BERT/OPT/GPT-2 heads, sizes that differ between layers) the
config records the per-module sizes under ``nc_prune_slim`` and :func:`load_slimmed` loads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.errors import PruningStateError
from ..core.slimming import Removal, SlimError, SlimReport
from .layers import TorchTarget, find_targets, unwrap
from .structure import FFN, Attention, find_attention, find_ffns

SLIM_KEY = "nc_prune_slim"


# ---- cutting tensors -------------------------------------------------------------------------------
def _keep_index(n: int, removed: Sequence[int]) -> torch.Tensor:
    gone = set(removed)
    return torch.tensor([i for i in range(n) if i not in gone], dtype=torch.long)


def _rows(width: int, units: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Row indices of ``units`` of ``width`` rows each, from ``offset``."""
    return (offset + units[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def _cut(target: TorchTarget, axis: str, index: torch.Tensor) -> None:
    """Keep only ``index`` along a canonical axis (``"out"`` rows with the bias, or ``"in"`` columns) of a layer."""
    module, w = target.module, target.weight
    dim = {"out": 0, "in": 1}[axis]
    if target.transposed:  # transformers' Conv1D stores (in, out)
        dim = 1 - dim
    with torch.no_grad():
        new = nn.Parameter(w.detach().index_select(dim, index.to(w.device)).clone(), requires_grad=w.requires_grad)
        setattr(module, target.param, new)
        bias = getattr(module, "bias", None)
        if axis == "out" and isinstance(bias, nn.Parameter) and target.param != "in_proj_weight":
            module.bias = nn.Parameter(bias.detach().index_select(0, index.to(bias.device)).clone(),
                                       requires_grad=bias.requires_grad)
    size = int(index.numel())
    if isinstance(module, nn.Linear):
        if axis == "out":
            module.out_features = size
        else:
            module.in_features = size
    elif hasattr(module, "nf") and axis == "out":  # Conv1D
        module.nf = size


def _zero_columns(target: TorchTarget, width: int, units: int, offset: int = 0) -> torch.Tensor:
    """Per unit: its ``width`` input columns of the layer are all zero."""
    w = target.canonical(target.weight.detach())
    cols = w[:, offset: offset + units * width]
    return (cols == 0).all(0).reshape(units, width).all(1)


def _zero_rows(target: TorchTarget, width: int, units: int, offset: int = 0) -> torch.Tensor:
    w = target.canonical(target.weight.detach())
    rows = w[offset: offset + units * width]
    return (rows == 0).all(1).reshape(units, width).all(1)


def _has_bias(target: TorchTarget) -> bool:
    bias = getattr(target.module, "bias", None)
    return isinstance(bias, torch.Tensor) and bool(bias.detach().abs().sum() > 0)


# ---- the plan ----------------------------------------------------------------------------------------
@dataclass
class _Step:
    """One module's cut, computed before anything changes."""

    removal: Removal
    apply: Any  # () -> None


def _attention_step(model: nn.Module, a: Attention, targets: Dict[str, TorchTarget]) -> Optional[_Step]:
    o = targets[a.o]
    g, d = a.group, a.head_dim
    dead_q = _zero_columns(o, d, a.heads)  # a query head whose output columns are zero contributes nothing
    dead_kv = dead_q.reshape(a.kv_heads, g).all(1)
    module = model.get_submodule(a.name)
    if isinstance(module, nn.MultiheadAttention):
        if bool(dead_q.any()):
            raise SlimError(f"{a.name}: torch.nn.MultiheadAttention keeps q, k and v at its embed_dim, so it cannot "
                            f"lose heads; slim leaves it whole — exclude it, or use an attention module of your own")
        return None
    if g > 1 and bool(dead_q.any()) and not torch.equal(dead_q.reshape(a.kv_heads, g).any(1), dead_kv):
        counts = dead_q.reshape(a.kv_heads, g).sum(1)
        if len(set(counts.tolist())) > 1:
            raise SlimError(f"{a.name}: the zeroed query heads differ in number between KV groups {counts.tolist()}; "
                            f"grouped-query attention needs the same number of query heads per KV head. Prune with "
                            f"gqa_heads='kv', or 'query' in local scope")
        return _query_step(module, a, targets, dead_q)
    removed = dead_kv.nonzero().reshape(-1).tolist()
    if not removed:
        return None
    keep_kv = _keep_index(a.kv_heads, removed)
    keep_q = (keep_kv[:, None] * g + torch.arange(g)[None, :]).reshape(-1)
    kv_rows, q_rows = _rows(d, keep_kv), _rows(d, keep_q)

    def apply() -> None:
        if a.fused:
            width = a.heads * d
            _cut(targets[a.q], "out", torch.cat([q_rows, q_rows + width, q_rows + 2 * width]))
        else:
            _cut(targets[a.q], "out", q_rows)
            _cut(targets[a.k], "out", kv_rows)
            _cut(targets[a.v], "out", kv_rows)
        _cut(o, "in", q_rows)
        _set_heads(module, len(keep_q), len(keep_kv), d)

    return _Step(Removal(a.name, "heads", a.heads, len(keep_q), [h for j in removed for h in range(j * g, j * g + g)],
                         {"heads": len(keep_q), "kv_heads": len(keep_kv), "head_dim": d}), apply)


def _query_step(module: nn.Module, a: Attention, targets: Dict[str, TorchTarget], dead_q: torch.Tensor) -> _Step:
    removed = dead_q.nonzero().reshape(-1).tolist()
    keep_q = _keep_index(a.heads, removed)
    rows = _rows(a.head_dim, keep_q)

    def apply() -> None:
        _cut(targets[a.q], "out", rows)
        _cut(targets[a.o], "in", rows)
        _set_heads(module, len(keep_q), a.kv_heads, a.head_dim)

    return _Step(Removal(a.name, "heads", a.heads, len(keep_q), removed,
                         {"heads": len(keep_q), "kv_heads": a.kv_heads, "head_dim": a.head_dim}), apply)


def _set_heads(module: nn.Module, heads: int, kv_heads: int, head_dim: int) -> None:
    """Tell the attention module its new head counts (the attributes transformers' modules read)."""
    if hasattr(module, "self") and hasattr(module.self, "num_attention_heads"):  # BERT's attention wrapper
        module = module.self
    for attr, value in (("num_heads", heads), ("num_attention_heads", heads), ("num_key_value_heads", kv_heads),
                        ("num_key_value_groups", heads // kv_heads), ("all_head_size", heads * head_dim),
                        ("split_size", heads * head_dim)):
        if hasattr(module, attr) and isinstance(getattr(module, attr), int):
            setattr(module, attr, value)


def _act_keeps_zero(model: nn.Module, f: FFN) -> bool:
    """Whether the FFN's activation maps 0 to 0 (then a zero row of every up projection is a dead channel)."""
    block = model.get_submodule(f.name) if f.name else model
    for attr in ("act_fn", "act", "activation_fn", "intermediate_act_fn"):
        act = getattr(block, attr, None) or getattr(getattr(block, "intermediate", None), attr, None)
        if callable(act):
            try:
                return bool(act(torch.zeros(1)).abs().sum() == 0)
            except (TypeError, RuntimeError):
                return False
    return False


def _ffn_step(model: nn.Module, f: FFN, targets: Dict[str, TorchTarget]) -> Optional[_Step]:
    down = targets[f.down]
    dead = _zero_columns(down, 1, f.inner)
    ups = [targets[u] for u in f.up]
    if not any(_has_bias(t) for t in ups) and _act_keeps_zero(model, f):
        # act(0) == 0 and no bias: a zero row of the up projection (or of the gate, or of up) silences the channel
        dead |= torch.stack([_zero_rows(t, 1, f.inner) for t in ups]).any(0)
    removed = dead.nonzero().reshape(-1).tolist()
    if not removed:
        return None
    keep = _keep_index(f.inner, removed)

    def apply() -> None:
        for t in ups:
            _cut(t, "out", keep)
        _cut(down, "in", keep)

    return _Step(Removal(f.name, "channels", f.inner, len(keep), removed, {"inner": len(keep)}), apply)


def _cut_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    with torch.no_grad():
        for attr in ("weight", "bias"):
            p = getattr(norm, attr, None)
            if isinstance(p, nn.Parameter):
                setattr(norm, attr, nn.Parameter(p.detach().index_select(0, keep.to(p.device)).clone(),
                                                 requires_grad=p.requires_grad))
        for attr in ("running_mean", "running_var"):
            b = norm._buffers.get(attr)
            if b is not None:
                norm._buffers[attr] = b.index_select(0, keep.to(b.device)).clone()
    norm.num_features = int(keep.numel())


def _cut_conv_or_linear(module: nn.Module, axis: str, keep: torch.Tensor, width: int = 1) -> None:
    """Keep output channels (rows, with the bias) or input channels / features of a conv or Linear."""
    dim = 0 if axis == "out" else 1
    index = keep if width == 1 else _rows(width, keep)
    with torch.no_grad():
        w = module.weight
        module.weight = nn.Parameter(w.detach().index_select(dim, index.to(w.device)).clone(),
                                     requires_grad=w.requires_grad)
        if axis == "out" and isinstance(getattr(module, "bias", None), nn.Parameter):
            b = module.bias
            module.bias = nn.Parameter(b.detach().index_select(0, index.to(b.device)).clone(),
                                       requires_grad=b.requires_grad)
    size = int(index.numel())
    if isinstance(module, nn.Linear):
        setattr(module, "out_features" if axis == "out" else "in_features", size)
    else:
        setattr(module, "out_channels" if axis == "out" else "in_channels", size)


def _cut_depthwise(module: nn.Module, keep: torch.Tensor) -> None:
    _cut_conv_or_linear(module, "out", keep)
    module.in_channels = module.groups = int(keep.numel())


def _group_step(model: nn.Module, group: Any) -> Optional[_Step]:
    """A traced channel group: a channel goes when every reader's input for it is zero (it then changes nothing)."""
    modules = dict(model.named_modules())
    if not group.readers:  # nothing reads it (the model's output): nothing to judge, nothing to remove
        return None
    dead = torch.ones(group.channels, dtype=torch.bool)
    for name, width in group.readers:
        w = modules[name].weight.detach()
        cols = w.transpose(0, 1).reshape(w.shape[1], -1)  # one row per input channel / feature
        dead &= (cols == 0).all(1).reshape(group.channels, width).all(1)
    removed = dead.nonzero().reshape(-1).tolist()
    if not removed:
        return None
    if not group.ok:
        raise SlimError(f"channels {removed[:8]}{'...' if len(removed) > 8 else ''} of {', '.join(group.producers)} "
                        f"are zero for every reader, but they cannot be removed safely: "
                        f"{'; '.join(dict.fromkeys(group.why_not))}. No layer was cut (pruning state, if any, was made "
                        f"permanent as strip does)")
    keep = _keep_index(group.channels, removed)

    def apply() -> None:
        for name in group.producers:
            _cut_conv_or_linear(modules[name], "out", keep)
        for name in group.depthwise:
            _cut_depthwise(modules[name], keep)
        for name in group.norms:
            _cut_norm(modules[name], keep)
        for name, width in group.readers:
            _cut_conv_or_linear(modules[name], "in", keep, width)

    return _Step(Removal(", ".join(group.producers), "channels", group.channels, len(keep), removed,
                         {"channels": len(keep)}), apply)


# ---- the config -------------------------------------------------------------------------------------------
def _config_update(model: nn.Module, attention: List[Attention], ffns: List[FFN], steps: List[_Step]
                   ) -> Tuple[Dict[str, Any], Dict[str, Dict[str, int]], List[str]]:
    """The config values that express the slimmed sizes, every module's sizes, and why the config cannot."""
    done = {s.removal.name: s.removal.sizes for s in steps}
    sizes: Dict[str, Dict[str, int]] = {}
    for a in attention:
        sizes[a.name] = done.get(a.name, {"heads": a.heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim})
    for f in ffns:
        sizes[f.name] = done.get(f.name, {"inner": f.inner})
    config = getattr(model, "config", None)
    if config is None:  # a plain torch model: its state_dict loads with load_slimmed_state
        return {}, sizes, []
    update: Dict[str, Any] = {}
    why: List[str] = []
    if any(s.removal.kind == "heads" for s in steps):
        heads = {(sizes[a.name]["heads"], sizes[a.name]["kv_heads"]) for a in attention}
        if len(heads) > 1:
            why.append("the number of heads differs between layers")
        elif "head_dim" not in type(config)().to_dict():
            why.append(f"{type(config).__name__} derives head_dim from hidden_size / num_attention_heads")
        else:
            (h, kv), = heads
            update.update(num_attention_heads=h, head_dim=attention[0].head_dim)
            if hasattr(config, "num_key_value_heads"):
                update["num_key_value_heads"] = kv
    if any(s.removal.kind == "channels" for s in steps):
        inner = {sizes[f.name]["inner"] for f in ffns}
        key = next((k for k in ("intermediate_size", "ffn_dim", "n_inner") if hasattr(config, k)), None)
        if len(inner) > 1:
            why.append("the FFN sizes differ between layers")
        elif key is None:
            why.append(f"{type(config).__name__} has no FFN size to set")
        else:
            update[key] = next(iter(inner))
    return update, sizes, why


# ---- entry points -------------------------------------------------------------------------------------------
def _finish_pruning(model: nn.Module) -> None:
    """Make every kind of mask permanent: nc_prune's pruning, the prune drop-in, PruneImplBase."""
    from . import prune
    from .prune_impl import finalize_prune_impl, prune_impls
    from .pruning import strip
    strip(model)
    for module in model.modules():
        for name in [n[: -len("_orig")] for n in list(module._parameters) if n.endswith("_orig")]:
            if prune.is_pruned(module) and hasattr(module, name + "_mask"):
                prune.remove(module, name)
    if prune_impls(model):
        finalize_prune_impl(model)


def model_slim(model: nn.Module, dry_run: bool = False) -> SlimReport:
    """Remove the heads and channels whose weights are zero, in place (INC's name; ``slim`` is an alias).

    Pruning state is made permanent first (nc_prune's masks stripped, the ``prune`` drop-in's and
    ``PruneImplBase``'s reparametrizations removed). Every module is checked before any is cut: a module that
    cannot lose what its weights say (``nn.MultiheadAttention``'s heads, uneven query heads under
    grouped-query attention, zeroed channels behind a reshape or concatenation) raises :class:`SlimError`
    naming it and the reason, and no layer is cut.

    Args:
        model: the model (a ``torch.compile`` / DDP wrapper is fine).
        dry_run: only report what would be removed.

    Returns:
        A :class:`SlimReport`: what was removed, the parameters before and after, and whether the config can
        express the result (``from_pretrained``) or :func:`load_slimmed` is needed.
    """
    root = unwrap(model)
    report = SlimReport(params_before=sum(p.numel() for p in root.parameters()))
    if not dry_run:
        _finish_pruning(root)
    _, targets = find_targets(root)
    attention = find_attention(root, targets)
    ffns = find_ffns(root, targets, attention)
    steps: List[_Step] = []
    for a in attention:
        step = _attention_step(root, a, targets)
        if step is not None:
            steps.append(step)
    for f in ffns:
        step = _ffn_step(root, f, targets)
        if step is not None:
            steps.append(step)
    covered = {n for a in attention for n in (a.q, a.k, a.v, a.o)} | {n for f in ffns for n in f.up + (f.down,)}
    for group in _traced_groups(root, covered):
        step = _group_step(root, group)
        if step is not None:
            steps.append(step)
    update, sizes, why = _config_update(root, attention, ffns, steps)
    report.removals = [s.removal for s in steps]
    report.config_expresses_it = not why
    report.why_not = why
    if dry_run:
        report.params_after = report.params_before
        return report
    for step in steps:
        step.apply()
    config = getattr(root, "config", None)
    if config is not None and steps:
        for key, value in update.items():
            setattr(config, key, value)
        setattr(config, SLIM_KEY, None if not why else sizes)
    report.params_after = sum(p.numel() for p in root.parameters())
    return report


def _traced_groups(model: nn.Module, covered: set) -> List[Any]:
    """The channel groups of a traceable model outside ``covered`` (none for a model fx cannot trace)."""
    from .graph import channel_groups
    try:
        found = channel_groups(model)
    except ValueError:
        return []
    return [g for g in found if not covered & set(g.producers + g.depthwise + [r for r, _ in g.readers])]


slim = model_slim


def load_slimmed_state(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """Load a slimmed model's ``state_dict`` into a fresh model of the original architecture (plain torch models).

    Convs, depthwise convs, Linears and BatchNorms whose saved weights are smaller are cut to the saved sizes
    first, then the state is loaded strictly. Any other module whose sizes differ is an error naming it.
    """
    for name, module in model.named_modules():
        w = state_dict.get(f"{name}.weight" if name else "weight")
        if w is None or not hasattr(module, "weight") or not isinstance(module.weight, torch.Tensor):
            continue
        if tuple(w.shape) == tuple(module.weight.shape):
            continue
        if isinstance(module, _NORM_TYPES):
            _cut_norm(module, torch.arange(w.shape[0]))
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            depthwise = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups > 1 and \
                module.groups == module.in_channels == module.out_channels
            if depthwise:
                _cut_depthwise(module, torch.arange(w.shape[0]))
            else:
                if w.shape[0] != module.weight.shape[0]:
                    _cut_conv_or_linear(module, "out", torch.arange(w.shape[0]))
                if w.shape[1] != module.weight.shape[1]:
                    _cut_conv_or_linear(module, "in", torch.arange(w.shape[1]))
        else:
            raise SlimError(f"{name} ({type(module).__name__}): its saved weight is {tuple(w.shape)}, the model's "
                            f"{tuple(module.weight.shape)}; only convs, Linears and BatchNorms are resized here")
    model.load_state_dict(state_dict)
    return model


_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def load_slimmed(directory: str, **kwargs: Any) -> nn.Module:
    """Load a slimmed ``transformers`` model whose config cannot express its sizes (``config.nc_prune_slim``).

    The model is built from its config at the original sizes, cut to the recorded ones, and its saved weights
    are loaded strictly; keyword arguments go to the config loader (``dtype`` is not needed: weights keep theirs).
    """
    import transformers
    from safetensors.torch import load_file
    config = transformers.AutoConfig.from_pretrained(directory, **kwargs)
    sizes = getattr(config, SLIM_KEY, None)
    arch = (getattr(config, "architectures", None) or [None])[0]
    if arch is None or not hasattr(transformers, arch):
        raise PruningStateError(f"{directory}: its config names no transformers architecture to build")
    model = getattr(transformers, arch)(config)
    if sizes:
        _, targets = find_targets(model)
        attention = {a.name: a for a in find_attention(model, targets)}
        ffns = {f.name: f for f in find_ffns(model, targets, list(attention.values()))}
        for name, size in sizes.items():
            if name in attention:  # which heads went does not matter here: the weights loaded next are the cut ones
                a = attention[name]
                dead = torch.zeros(a.kv_heads, a.group, dtype=torch.bool)
                if size["kv_heads"] < a.kv_heads:
                    dead[size["kv_heads"]:] = True
                else:
                    dead[:, size["heads"] // a.kv_heads:] = True
                _cut_dead_heads(model, a, targets, dead.reshape(-1))
            elif name in ffns:
                f = ffns[name]
                keep = torch.arange(size["inner"])
                for u in f.up:
                    _cut(targets[u], "out", keep)
                _cut(targets[f.down], "in", keep)
    files = sorted(p for p in os.listdir(directory) if p.endswith(".safetensors"))
    if not files:
        raise PruningStateError(f"{directory}: no .safetensors weights to load (save with safe_serialization=True)")
    state = {}
    for p in files:
        state.update(load_file(os.path.join(directory, p)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    real_missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if real_missing or unexpected:
        raise PruningStateError(f"{directory}: the weights do not fit the slimmed architecture (missing "
                                f"{real_missing[:5]}, unexpected {list(unexpected)[:5]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def _cut_dead_heads(model: nn.Module, a: Attention, targets: Dict[str, TorchTarget], dead_q: torch.Tensor) -> None:
    """Cut the query heads marked dead (with their KV heads when whole KV groups go) from a fresh model."""
    g = a.group
    module = model.get_submodule(a.name)
    dead_kv = dead_q.reshape(a.kv_heads, g).all(1)
    if g > 1 and not torch.equal(dead_q.reshape(a.kv_heads, g).any(1), dead_kv):
        _query_step(module, a, targets, dead_q).apply()
        return
    keep_kv = _keep_index(a.kv_heads, dead_kv.nonzero().reshape(-1).tolist())
    keep_q = (keep_kv[:, None] * g + torch.arange(g)[None, :]).reshape(-1)
    d = a.head_dim
    if a.fused:
        width = a.heads * d
        rows = _rows(d, keep_q)
        _cut(targets[a.q], "out", torch.cat([rows, rows + width, rows + 2 * width]))
    else:
        _cut(targets[a.q], "out", _rows(d, keep_q))
        _cut(targets[a.k], "out", _rows(d, keep_kv))
        _cut(targets[a.v], "out", _rows(d, keep_kv))
    _cut(targets[a.o], "in", _rows(d, keep_q))
    _set_heads(module, len(keep_q), len(keep_kv), d)
