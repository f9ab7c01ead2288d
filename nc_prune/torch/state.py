"""The pruning state a torch model carries, and the hooks that keep it right across ``load_state_dict``.

On every pruned module: ``<param>_prune_mask`` (bool), and per pruner ``<param>_prune_score`` (gradient
criteria) and ``<param>_prune_<key>`` (:attr:`BasePruner.LAYER_STATE`, e.g. a progressive stage plan). On
the root module: ``nc_prune_step`` (the step counter) and ``nc_prune_plan`` (the per-layer record of
:mod:`nc_prune.core.records`, as UTF-8 JSON bytes). All are persistent buffers, so ``state_dict()`` is a
complete checkpoint and ``torch.load(weights_only=True)`` reads it.

The hooks are plain picklable objects holding no reference to the pruning object, so pruned models
deep-copy and pickle:

* :class:`ReapplyMask` (per module, after loading): masked weights are zeroed again.
* :class:`CheckRecords` (root, before and after loading): a checkpoint pruned under another plan is
  refused before anything is written — or re-planned from its zeros when the config says
  ``resume_from_pruned_checkpoint=True``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..core import records
from ..core.errors import warn_user
from ..core.pruner import StepCounter

MASK_SUFFIX = "_prune_mask"
SCORE_SUFFIX = "_prune_score"
STATE_PREFIX = "_prune_"
STEP_BUFFER = "nc_prune_step"
PLAN_BUFFER = "nc_prune_plan"
#: Record entry (not a plan key): this layer's group may be re-planned from a checkpoint's zeros.
REPLAN = "resume_from_pruned_checkpoint"


def is_state_buffer(name: str) -> bool:
    """A buffer nc_prune put on a module (mask, score or layer state of a weight)."""
    return STATE_PREFIX in name


def plan_tensor(layers: Mapping[str, Mapping[str, Any]], dense: Mapping[str, Mapping[str, Any]]) -> torch.Tensor:
    return torch.tensor(list(records.encode(layers, dense)), dtype=torch.uint8)


def read_plan(t: Optional[torch.Tensor]) -> Optional[Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]]]]:
    """``(pruned layer records, dense layer records)`` of a plan buffer, or None without one."""
    return None if t is None else records.decode(bytes(t.cpu().tolist()))


def canonical(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A stored weight (or mask) in the canonical layout, from its record's ``layout``."""
    return t.t() if layout == "transposed" else t


def report_from_state(state: Mapping[str, torch.Tensor], prefix: str = ""):
    """The sparsity report of a state dict that carries a plan (``nc_prune_plan``), else None: the same table a
    live pruning prints, from the file alone. Each record names its weight's ``key`` and ``layout``."""
    plan = read_plan(state.get(prefix + PLAN_BUFFER))
    if plan is None:
        return None
    layers, dense = plan
    weights, masks = {}, {}
    for name, record in {**dense, **layers}.items():
        key = prefix + record["key"]
        weights[name] = canonical(state[key].detach(), record["layout"]).float().cpu().numpy()
        if name in layers:
            masks[name] = canonical(state[key + MASK_SUFFIX], record["layout"]).cpu().numpy()
    position = {k: i for i, k in enumerate(state)}
    order = sorted(weights, key=lambda n: position[prefix + {**dense, **layers}[n]["key"]])
    return records.report({n: weights[n] for n in order}, layers, dense, masks)


class ModelStep(StepCounter):
    """The step counter of a pruning session, stored in the model: the root's ``nc_prune_step`` buffer.

    The buffer is the one place the step lives; the session and its pruners read it through this counter
    (see :class:`~nc_prune.core.pruner.StepCounter`), so a ``load_state_dict`` / ``dcp.load`` / DDP buffer
    broadcast that writes the buffer is the step everything uses next, with nothing to copy back. Reading
    costs a dict lookup and a version check: the value is re-read from the tensor (``int(buf)``, a device
    sync on an accelerator) only when something else wrote it or put a new tensor in its place (``.to()``).
    :attr:`outside_writes` counts those, for state that must be re-read with it (scores). Once the buffer is
    gone (``strip``), the last value is kept.
    """

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self._root = root
        self._seen: Optional[torch.Tensor] = None
        self._seen_version = -1
        #: How many times the buffer was found written by something other than :meth:`set`.
        self.outside_writes = 0

    def _buffer(self) -> Optional[torch.Tensor]:
        return self._root._buffers.get(STEP_BUFFER)

    def get(self) -> int:
        buf = self._buffer()
        if buf is not None and (buf is not self._seen or buf._version != self._seen_version):
            self._value = int(buf)
            self._seen, self._seen_version = buf, buf._version
            self.outside_writes += 1
        return self._value

    def set(self, value: int) -> None:
        self._value = int(value)
        buf = self._buffer()
        if buf is not None:
            buf.fill_(self._value)
            self._seen, self._seen_version = buf, buf._version


def _split(key: str) -> Tuple[str, str]:
    """``"blocks.0.fc.weight"`` → ``("blocks.0.fc", "weight")``: the module's path and the parameter."""
    path, _, param = key.rpartition(".")
    return path, param


class ReapplyMask:
    """Module hook: after ``load_state_dict``, masked weights are zeroed again."""

    def __init__(self, param: str, mask: str) -> None:
        self.param, self.mask = param, mask

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        mask = module._buffers.get(self.mask)
        if mask is not None:
            with torch.no_grad():
                weight = getattr(module, self.param)
                if hasattr(weight, "to_local") and hasattr(mask, "to_local"):  # FSDP2 shards (DTensor)
                    weight, mask = weight.to_local(), mask.to_local()
                weight.copy_(torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)))


class CheckRecords:
    """Root hooks: compare a checkpoint's plan with the model's before loading; re-plan after, if asked."""

    def __init__(self) -> None:
        self._replan: List[str] = []

    def before(self, module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        live_t = module._buffers.get(PLAN_BUFFER)
        saved_t = state_dict.get(prefix + PLAN_BUFFER)
        self._replan = []
        if live_t is None or saved_t is None or torch.equal(saved_t.cpu(), live_t.cpu()):
            return
        (live, _), (saved, _) = read_plan(live_t), read_plan(saved_t)
        differ = records.conflicts(saved, live)
        if differ and not all(record.get(REPLAN) for record in live.values()):
            raise records.mismatch_error(list(differ.values()), "this checkpoint")
        replan = [live[n]["key"] for n in differ if n in live]
        for key in replan:  # keep the model's own (fresh) state for these layers; zeros are adopted after
            _own_state_into(module, state_dict, prefix, key)
        for name in [n for n in saved if n not in live]:
            own = prefix + saved[name]["key"] + STATE_PREFIX
            for key in [k for k in state_dict if k.startswith(own)]:
                del state_dict[key]
        state_dict[prefix + PLAN_BUFFER] = live_t.clone()
        self._replan = replan
        if replan:
            names = [n for n in differ if n in live]
            warn_user(f"resume_from_pruned_checkpoint=True: re-planning {', '.join(names)} from the checkpoint's "
                      f"zeros; its masks for them were saved under another plan and are dropped")

    def after(self, module: nn.Module, incompatible_keys: Any) -> None:
        for key in self._replan:
            path, param = _split(key)
            layer = module.get_submodule(path)
            layer._buffers[param + MASK_SUFFIX].copy_(getattr(layer, param).detach() != 0)
        self._replan = []


def _own_state_into(root: nn.Module, state_dict: Dict[str, Any], prefix: str, key: str) -> None:
    path, param = _split(key)
    layer = root.get_submodule(path)
    for buf_name, buf in layer._buffers.items():
        full = f"{prefix}{path}.{buf_name}" if path else prefix + buf_name
        if buf_name.startswith(param + STATE_PREFIX) and full in state_dict:
            state_dict[full] = buf.detach().clone()
