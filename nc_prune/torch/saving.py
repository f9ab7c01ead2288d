"""Saved pruned models: safetensors weights plus ``nc_prune.json``, the record of how each layer was pruned.

:func:`save_pruned` writes what :func:`~nc_prune.torch.strip` would leave — the weights with their zeros, no
nc_prune buffer — without changing the model it is given, and beside them the per-layer record (pattern,
pruning type, target, exact zero counts, units) of the same :func:`~nc_prune.torch.sparsity_report` a live
pruning prints. A transformers model is written by its own ``save_pretrained``, so ``from_pretrained`` loads
the directory as any other. :func:`load_pruned` loads a directory into a model; :func:`read_pruned` reads it
(tensors and record, nothing unpickled) and :func:`saved_report` makes its sparsity report — what
``nc-prune report DIR`` prints.

With ``bitmask=True`` each weight that has zeros is stored as its nonzero values and one bit per weight
(see :func:`pack_bitmask`); ``nc_prune.json`` says how many bytes that saves against dense storage.

>>> import os, tempfile, torch
>>> from nc_prune import WeightPruningConfig
>>> from nc_prune.torch import prepare_pruning, save_pruned, load_pruned
>>> torch.manual_seed(0) and None
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5)
>>> prepare_pruning(model, cfg).prune_now()
>>> out = os.path.join(tempfile.mkdtemp(), "pruned")
>>> saved = save_pruned(model, out, bitmask=True)
>>> [(layer["name"], layer["pruned"], layer["zeros"]) for layer in saved["layers"]]
[('0', True, 64), ('2', False, 0)]
>>> fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> x = torch.randn(3, 8)
>>> torch.equal(load_pruned(out, fresh)(x), model(x))
True
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..core import records
from ..core.errors import SavedModelError
from ..core.report import SparsityReport
from .layers import find_targets, unwrap
from .pruner import zero_masked
from .state import MASK_SUFFIX, PLAN_BUFFER, REPLAN, STEP_BUFFER, canonical, is_state_buffer, read_plan, report_from_state

RECORD_FILE = "nc_prune.json"
WEIGHTS_FILE = "model.safetensors"  # transformers' name: from_pretrained finds a dense directory's weights
BITMASK_FILE = "nc_prune_bitmask.safetensors"  # another name: from_pretrained must not read packed tensors
FORMAT = "nc_prune.pruned"
FORMAT_VERSION = 1
VALUES = "::values"  # "::" cannot occur in a state_dict key (module paths are joined by ".")
BITMASK = "::bitmask"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# ---- bitmask storage ------------------------------------------------------------------------------------
def pack_bitmask(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(values, bitmask)`` of a tensor: its nonzero elements in row-major order (1-D, same dtype) and one bit
    per element, set where the element is stored, packed 8 to a byte, first element in the highest bit
    (``np.packbits``' order). An element counts as zero when all its bits are (``-0.0`` is kept as a value), so
    :func:`unpack_bitmask` gives back the very same bits."""
    flat = t.detach().contiguous().reshape(-1).cpu()
    keep = flat.view(_BITS[flat.element_size()]) != 0
    packed = np.packbits(keep.numpy(), bitorder="big")
    return flat[keep].clone(), torch.from_numpy(packed)


def unpack_bitmask(values: torch.Tensor, bitmask: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """The dense tensor of :func:`pack_bitmask`'s ``(values, bitmask)``; a pair that does not fit ``shape`` is a
    :class:`~nc_prune.core.errors.SavedModelError`."""
    numel = int(np.prod(shape, dtype=np.int64))
    if bitmask.dtype != torch.uint8 or bitmask.dim() != 1 or bitmask.numel() != (numel + 7) // 8:
        raise SavedModelError(f"a bitmask of {bitmask.numel()} {bitmask.dtype} values cannot describe shape "
                              f"{list(shape)} ({(numel + 7) // 8} uint8 bytes expected)")
    keep = torch.from_numpy(np.unpackbits(bitmask.numpy(), count=numel, bitorder="big").astype(bool))
    if int(keep.sum()) != values.numel():
        raise SavedModelError(f"the bitmask marks {int(keep.sum())} stored values but {values.numel()} are stored")
    out = torch.zeros(numel, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ---- saving ---------------------------------------------------------------------------------------------
def _stripped_state(root: nn.Module) -> Dict[str, torch.Tensor]:
    """The state_dict :func:`~nc_prune.torch.strip` would leave, from copies: masked weights zeroed exactly as
    strip zeroes them, nc_prune's buffers left out. Keys that share one tensor (tied weights) still share it."""
    state = root.state_dict(keep_vars=True)  # tied keys hold the same Parameter object
    out: Dict[str, torch.Tensor] = {}
    replaced: Dict[int, torch.Tensor] = {}
    for key, t in state.items():
        leaf = key.rpartition(".")[2]
        if key in (PLAN_BUFFER, STEP_BUFFER) or is_state_buffer(leaf):
            continue
        mask = state.get(key + MASK_SUFFIX)
        if mask is not None and id(t) not in replaced:
            copy = t.detach().clone()
            zero_masked([copy], [mask])
            replaced[id(t)] = copy
        out[key] = replaced.get(id(t), t.detach())
    return out


def _layer_entries(root: nn.Module) -> Tuple[SparsityReport, List[Dict[str, Any]]]:
    """The model's sparsity report and, per row, its record: the plan's (pattern, pruning type, target,
    scope, group, coupling, key, layout) for a model being pruned, else where its weight is."""
    state = root.state_dict()
    report = report_from_state(state)
    plan = read_plan(state.get(PLAN_BUFFER))
    if plan is None:
        _, targets = find_targets(root)
        report = SparsityReport.from_arrays({n: t.canonical(t.weight.detach()).cpu().float().numpy()
                                             for n, t in targets.items()})
        layers: Dict[str, Dict[str, Any]] = {}
        dense = {n: {"key": t.key, "layout": "transposed" if t.transposed else "canonical",
                     "note": "no pruning record: the model was not being pruned (or was stripped before saving)"}
                 for n, t in targets.items()}
    else:
        layers, dense = plan
    entries = []
    for row in report.rows:
        record = layers.get(row.name) or dense[row.name]
        entry: Dict[str, Any] = {"name": row.name, "pruned": row.name in layers}
        entry.update({k: v for k, v in record.items() if k != REPLAN})
        entry.update(shape=list(row.shape), params=row.params, zeros=row.zeros, sparsity=row.ratio)
        if row.name in layers:
            entry.update(units=row.units, pruned_units=row.pruned_units)
        entries.append(entry)
    return report, entries


def _is_transformers(root: nn.Module) -> bool:
    tf = sys.modules.get("transformers")
    return tf is not None and isinstance(root, tf.PreTrainedModel)


def save_pruned(model: nn.Module, directory: str, *, bitmask: bool = False) -> Dict[str, Any]:
    """Write ``model``'s pruned weights and the record of how each layer was pruned to ``directory``.

    The weights are those :func:`~nc_prune.torch.strip` would leave (zeros in place, no nc_prune buffer),
    taken from copies: the model, its masks and its pruning go on unchanged. ``directory`` gets
    ``model.safetensors`` (written by ``save_pretrained`` for a transformers model, so ``from_pretrained``
    loads it) and ``nc_prune.json``: per layer its pattern, pruning type, target, exact zero count and pruned
    units, or why it stayed dense; the config of the pruning (None when no pruning object is alive: pass the
    :class:`~nc_prune.torch.TorchPruning` itself to be sure), the step and the nc_prune version.

    Args:
        model: a torch model (or the :class:`~nc_prune.torch.TorchPruning` pruning it), being pruned (its plan is read) or not (then every prunable weight is listed as
            dense, with its zeros); a ``torch.compile`` / DDP wrapper is looked through.
        directory: created if missing; files of the same names are overwritten.
        bitmask: store each weight that has zeros as its nonzero values plus a packed bitmask
            (``nc_prune_bitmask.safetensors``; only :func:`load_pruned` reads it) where that is smaller than
            dense; ``nc_prune.json`` records the bytes of both.

    Returns:
        The dict written to ``nc_prune.json``.
    """
    from .pruning import TorchPruning, live_pruning

    live = model if isinstance(model, TorchPruning) else None
    model = model.model if live is not None else model
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_pruned needs a torch.nn.Module (or the TorchPruning pruning it), got "
                        f"{type(model).__name__}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    from safetensors.torch import save_file
    from .. import __version__

    root = unwrap(model)
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise SavedModelError(f"{directory} is a file; save_pruned writes a directory: give a new or existing "
                              f"directory's path")
    os.makedirs(directory, exist_ok=True)
    report, entries = _layer_entries(root)
    state = _stripped_state(root)
    live = live or live_pruning(root)
    step = root._buffers.get(STEP_BUFFER)
    meta: Dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nc_prune_version": __version__,
        "model_class": f"{type(root).__module__}.{type(root).__qualname__}",
        "storage": "bitmask" if bitmask else "dense",
        "step": None if step is None else int(step),
        "config": None if live is None else live.config.to_dict(),
        "layers": entries,
        "total": {"params": report.total_params, "zeros": report.total_zeros, "sparsity": report.total_ratio},
    }
    hf = _is_transformers(root)
    if bitmask:
        meta["weights"] = [BITMASK_FILE]
        meta["bitmask"] = _write_bitmask(state, entries, os.path.join(directory, BITMASK_FILE), save_file)
        if hf:
            root.config.save_pretrained(directory)
    elif hf:
        root.save_pretrained(directory, state_dict=state)  # model.safetensors, or shards model-0000i-of-0000n
        meta["weights"] = sorted(f for f in os.listdir(directory) if f.startswith("model") and
                                 f.endswith(".safetensors"))
    else:
        save_file(_unshared(state), os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt"})
        meta["weights"] = [WEIGHTS_FILE]
    with open(os.path.join(directory, RECORD_FILE), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    return meta


def _unshared(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Contiguous tensors, each with its own storage (safetensors refuses tensors sharing memory)."""
    out, seen = {}, set()
    for key, t in state.items():
        t = t.detach().cpu().contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ptr in seen or (t.numel() and t.untyped_storage().nbytes() != _bytes(t)):
            t = t.clone()
        if ptr is not None:
            seen.add(ptr)
        out[key] = t
    return out


def _write_bitmask(state: Dict[str, torch.Tensor], entries: List[Dict[str, Any]], path: str,
                   save_file: Any) -> Dict[str, Any]:
    keys = {e["key"] for e in entries if e["zeros"]}
    tensors: Dict[str, torch.Tensor] = {}
    packed: Dict[str, Dict[str, Any]] = {}
    dense_bytes = stored_bytes = 0
    for key, t in _unshared(state).items():
        dense_bytes += _bytes(t)
        if key in keys:
            values, bits = pack_bitmask(t)
            if _bytes(values) + _bytes(bits) < _bytes(t):
                tensors[key + VALUES], tensors[key + BITMASK] = values, bits
                packed[key] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                               "stored": values.numel(), "dense_bytes": _bytes(t),
                               "bitmask_bytes": _bytes(values) + _bytes(bits)}
                stored_bytes += _bytes(values) + _bytes(bits)
                continue
        tensors[key] = t
        stored_bytes += _bytes(t)
    save_file(tensors, path, metadata={"format": "pt", "nc_prune": "bitmask"})
    return {"tensors": packed, "dense_bytes": dense_bytes, "stored_bytes": stored_bytes,
            "saved_bytes": dense_bytes - stored_bytes}


# ---- reading --------------------------------------------------------------------------------------------
def read_record(directory: str) -> Dict[str, Any]:
    """``nc_prune.json`` of a directory :func:`save_pruned` wrote, checked; else a :class:`SavedModelError`
    naming what is wrong."""
    path = os.path.join(os.fspath(directory), RECORD_FILE)
    if not os.path.isfile(path):
        raise SavedModelError(f"{directory} has no {RECORD_FILE}: it was not written by nc_prune.torch.save_pruned "
                              f"(save the model with save_pruned(model, {str(directory)!r}))")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SavedModelError(f"{path} is not valid JSON ({exc}); write it again with save_pruned") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SavedModelError(f"{path} is not an nc_prune record (its 'format' is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SavedModelError(f"{path} has format_version {meta.get('format_version')!r}; this nc_prune reads "
                              f"version {FORMAT_VERSION}: read it with the nc_prune version that wrote it "
                              f"({meta.get('nc_prune_version')})")
    for i, entry in enumerate(meta.get("layers", [])):
        missing = [k for k in ("name", "key", "layout", "pruned", "zeros") if k not in entry]
        if missing:
            raise SavedModelError(f"{path}: layers[{i}] lacks {', '.join(missing)}; write it again with save_pruned")
    return meta


def read_pruned(directory: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, record)`` of a directory :func:`save_pruned` wrote: the dense weights (bitmask-stored ones
    unpacked) read with safetensors — nothing is unpickled — and ``nc_prune.json``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_record(directory)
    state: Dict[str, torch.Tensor] = {}
    for name in meta.get("weights", []):
        path = os.path.join(os.fspath(directory), name)
        if not os.path.isfile(path):
            raise SavedModelError(f"{directory}: {RECORD_FILE} lists {name}, which is missing; copy the whole "
                                  f"directory save_pruned wrote")
        try:
            state.update(load_file(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SavedModelError(f"{path} is not a readable safetensors file ({exc})") from None
    for key, info in meta.get("bitmask", {}).get("tensors", {}).items():
        try:
            values, bits = state.pop(key + VALUES), state.pop(key + BITMASK)
        except KeyError:
            raise SavedModelError(f"{directory}: {key!r} is recorded as bitmask-stored but its {key}{VALUES} / "
                                  f"{key}{BITMASK} tensors are missing") from None
        try:
            state[key] = unpack_bitmask(values, bits, tuple(info["shape"]))
        except SavedModelError as exc:
            raise SavedModelError(f"{directory}: tensor {key!r}: {exc}") from None
    return state, meta


def saved_report(directory: str) -> Tuple[SparsityReport, Dict[str, Any]]:
    """The sparsity report of a saved directory, made from its tensors (exact zeros) and its records by the same
    function a live report uses; a pruned layer's units count as pruned when all their weights are zero.
    Returns ``(report, record)``."""
    state, meta = read_pruned(directory)
    layers: Dict[str, Dict[str, Any]] = {}
    dense: Dict[str, Dict[str, Any]] = {}
    weights: Dict[str, np.ndarray] = {}
    for entry in meta.get("layers", []):
        if entry["key"] not in state:
            raise SavedModelError(f"{directory}: layer {entry['name']!r} has no tensor {entry['key']!r} in "
                                  f"{', '.join(meta.get('weights', []))}")
        weights[entry["name"]] = canonical(state[entry["key"]], entry["layout"]).float().numpy()
        (layers if entry["pruned"] else dense)[entry["name"]] = entry
    return records.report(weights, layers, dense, {n: weights[n] != 0 for n in layers}), meta


def load_pruned(directory: str, model: nn.Module) -> nn.Module:
    """Load a directory :func:`save_pruned` wrote into ``model`` (the plain architecture: the pruned weights
    go in with their zeros), strictly: a missing or unexpected tensor is an error naming it — except a tied
    weight that transformers saved once. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_pruned needs the model to load into (a torch.nn.Module), got {type(model).__name__}")
    state, _ = read_pruned(directory)
    root = unwrap(model)
    own = root.state_dict(keep_vars=True)
    unexpected = [k for k in state if k not in own]
    tied = {id(own[k]) for k in state if k in own}  # tied keys hold the same Parameter: saved once is enough
    missing = [k for k in own if k not in state and id(own[k]) not in tied]
    if missing or unexpected:
        ours = [k for k in missing if k in (PLAN_BUFFER, STEP_BUFFER) or is_state_buffer(k.rpartition(".")[2])]
        fix = ("; it is being pruned: load into the plain model, then prepare_pruning (with "
               "resume_from_pruned_checkpoint=True to go on from the zeros)" if ours else
               "; give the architecture the directory was saved from")
        raise SavedModelError(f"{directory} does not fit {type(root).__name__}: "
                              f"{_few('missing', missing)}{_few('unexpected', unexpected)}".rstrip("; ") + fix)
    for key in own:  # in the model's order: the first layer that differs is named
        t = state.get(key)
        if t is not None and own[key].shape != t.shape:
            raise SavedModelError(f"{directory}: tensor {key!r} has shape {list(t.shape)}, the model's "
                                  f"{list(own[key].shape)}; give the architecture the directory was saved from")
    root.load_state_dict(state, strict=False)
    return model


def _few(what: str, keys: List[str]) -> str:
    if not keys:
        return ""
    return f"{what} {', '.join(keys[:5])}{f' and {len(keys) - 5} more' if len(keys) > 5 else ''}; "
