"""One-shot pruning of a trained Keras model from calibration data: ``magnitude``, ``wanda``, ``sparse_gpt``.

``prepare_pruning(model, config, dataloader=calib)`` — the torch backend's call — prunes the model now and
returns a :class:`OneShotPruning` (``report()``, ``strip()``, ``calibration``, ``masks``);
:func:`prune_once` ``(model, config, data)`` is the same function under a name that says what it does. The
maths is the core's (:mod:`nc_prune.core.oneshot`, on numpy): the same masks and SparseGPT weights as the torch
one-shot on the same weights and calibration data.

How a run goes, as the torch pipeline (:mod:`nc_prune.torch.calibration`) does it:

1. **Blocks.** The model's repeated blocks are found: a ``keras.Sequential`` (the model itself, or one inside
   it) or a list attribute of two layers or more (``self.blocks = [Block() for _ in range(n)]``) whose items
   hold the most of the layers to prune; ties go to the outermost. ``blocks="path.to.list"`` names it.
2. **Block by block.** The model runs on every calibration batch until the first block, whose inputs are kept
   (all positional and keyword arguments). Each block then runs on its inputs while its layers' inputs are
   folded into float32 statistics, its layers are pruned, and the pruned block runs again to make the next
   block's inputs. Layers outside the blocks are pruned from a pass of the whole model (those that run
   before the first block first, the others after the last block).
3. **Layer by layer otherwise.** A model without such a list (a Functional graph with branches, a
   subclassed model holding layers one by one) is pruned one layer at a time in the order its layers first
   run (topological for a Functional model): each layer's statistics come from a pass of the whole model
   with the layers before it already pruned.

**How inputs are seen.** Keras 3 has no forward hooks. For the length of one pass, each layer whose inputs
are wanted gets an instance attribute ``call`` that records its first argument and calls the layer's own
``call`` — Keras's ``Layer.__call__`` looks ``self.call`` up at every call, on every backend — and the
attribute is deleted again in a ``finally``, so the layer's ``__dict__`` is what it was (set and deleted with
``object.__setattr__`` / ``object.__delattr__``, past Keras's attribute tracking). The model is called
eagerly (``model(x, training=False)``), never traced, so nothing compiled keeps the recorder. Nothing else of
the model changes: no layer, node, variable or config is added, and only the pruned kernels are written.
Limits: a layer called from a traced function of your own during the pass would not be seen, and the model
must not be used from another thread while it is pruned.

Layers: ``Dense`` and ``EinsumDense`` (the ``MultiHeadAttention`` projections included) for ``wanda`` and
``sparse_gpt``; ``magnitude`` prunes every prunable layer with every pattern, as in training.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import keras

from ..core import records
from ..core.config import WeightPruningConfig
from ..core.errors import ConfigError, ConfigTypeError, PruningStateError
from ..core.oneshot import CalibrationPruner, LayerStats, block_sparsities, outlier_ratio
from ..core.pruner import BasePruner
from ..core.report import SparsityReport
from ..core.session import PruningSession, as_config
from .discovery import PrunableWeight, find_prunable_weights
from .layout import EinsumLayout
from .pruner import to_numpy

ConfigLike = Union[WeightPruningConfig, Mapping[str, Any]]
Inputs = List[Tuple[tuple, dict]]
_MISSING = object()


class _Stop(Exception):
    """Raised by the recorder on the first block once its inputs are in: the rest of the model need not run."""


# ---- the glue: the core's pruners on numpy copies of Keras variables ---------------------------------------
class KerasOneShotPruner(BasePruner):
    """The core's pruners on a Keras model's variables for a one-shot run: weights are read and written as
    numpy in the canonical layout, masks are kept in memory (there is no training to keep them for)."""

    def __init__(self, config, modules) -> None:
        super().__init__(config, modules)
        self._keep: Dict[str, np.ndarray] = {}

    def _weight(self, name):
        return to_numpy(self.modules[name].variable)

    def _grad(self, name):
        return None

    def _to_canonical(self, name, value):
        return self.modules[name].layout.to_canonical(np.asarray(value))

    def _get_mask(self, name):
        if name not in self._keep:
            return np.ones(self.modules[name].shape, dtype=bool)
        return self._keep[name]

    def _set_mask(self, name, keep):
        self._keep[name] = np.asarray(keep, dtype=bool).reshape(self.modules[name].shape)
        self.masks[name] = self._keep[name]

    def _apply_masks(self):
        for name, keep in self._keep.items():
            w = self._canonical_weight(name)
            w[~keep] = 0
            self._write_weight(name, w)

    def _add_to_grad(self, name, term):
        raise PruningStateError("one-shot pruning takes no training step; a regularizer has nothing to add to")

    def _canonical_weight(self, name):
        return np.array(self._to_canonical(name, self._weight(name)), copy=True)

    def _write_weight(self, name, canonical):
        w = self.modules[name]
        native = w.layout.from_canonical(np.asarray(canonical), w.native_shape)
        w.variable.assign(native.astype(keras.backend.standardize_dtype(w.variable.dtype)))

    def _missing_grad_hint(self, name):
        return ("one-shot pruning in Keras computes no gradients: use pruning_type='magnitude', 'wanda' or "
                "'sparse_gpt', or prune during training with prepare_pruning(model, config) and model.fit")


# ---- calibration data ----------------------------------------------------------------------------------
def _to_numpy_tree(x: Any) -> Any:
    def leaf(t):
        if t is None or isinstance(t, (np.ndarray, str, bytes, int, float, bool)):
            return t
        try:
            return np.asarray(t)
        except Exception:  # noqa: BLE001 - e.g. a torch tensor that requires grad
            return np.asarray(keras.ops.convert_to_numpy(t))
    return keras.tree.map_structure(leaf, x)


def _x_of(element: Any) -> Any:
    """A batch's model inputs: ``x`` of ``(x, y)`` / ``(x, y, sample_weight)`` (a tuple), else the batch itself
    (a list or dict is a multi-input model's inputs)."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        return element[0]
    if isinstance(element, tuple) and len(element) == 1:
        return element[0]
    return element


def _length(x: Any) -> int:
    leaves = keras.tree.flatten(x)
    return int(leaves[0].shape[0]) if leaves else 0


def calibration_batches(data: Any, batch_size: int = 32) -> List[Any]:
    """The model inputs of every calibration batch, as numpy (read several times, so kept in a list).

    ``data`` is numpy arrays (``x``, a dict of them, or an ``(x, y)`` tuple of arrays — cut into batches of
    ``batch_size``), a ``tf.data.Dataset`` (its elements), a ``keras.utils.PyDataset``, or any iterable of
    batches (``x`` or ``(x, y)``), e.g. a list or a torch ``DataLoader``.
    """
    if data is None:
        raise ConfigError("one-shot pruning needs calibration data: pass dataloader= (numpy arrays, a tf.data.Dataset "
                          "or a list of batches of the model's inputs)")
    arrays = None
    if isinstance(data, np.ndarray):
        arrays = data
    elif isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        arrays = data
    elif isinstance(data, tuple) and len(data) in (2, 3) and all(
            isinstance(v, np.ndarray) or (isinstance(v, dict) and all(isinstance(a, np.ndarray) for a in v.values()))
            or v is None for v in data):
        arrays = data[0]
    if arrays is not None:
        n = _length(arrays)
        out = [keras.tree.map_structure(lambda a, i=i: a[i:i + batch_size], arrays) for i in range(0, n, batch_size)]
    elif isinstance(data, keras.utils.PyDataset):
        out = [_to_numpy_tree(_x_of(data[i])) for i in range(len(data))]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        out = [_to_numpy_tree(_x_of(element)) for element in data]
    else:
        raise ConfigTypeError(f"calibration data must be numpy arrays, a tf.data.Dataset or an iterable of batches, "
                              f"got {type(data).__name__}")
    if not out:
        raise ConfigError("the dataloader gave no batch; one-shot pruning needs calibration batches (pass a non-empty "
                          "array, tf.data.Dataset or list of batches)")
    return out


def _describe(x: Any) -> str:
    def leaf(t):
        shape = getattr(t, "shape", None)
        return f"{getattr(t, 'dtype', type(t).__name__)}{list(shape) if shape is not None else ''}"
    return str(keras.tree.map_structure(leaf, x))


# ---- seeing a layer's inputs ---------------------------------------------------------------------------
def _first_input(layer: Any, args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    params = [p for p in inspect.signature(type(layer).call).parameters if p != "self"]
    return kwargs[params[0]] if params and params[0] in kwargs else next(iter(kwargs.values()))


@contextlib.contextmanager
def recording(hooks: Sequence[Tuple[Any, Callable[[Callable, tuple, dict], Any]]]):
    """For the ``with`` block, calls of each layer go through ``hook(call, args, kwargs)``.

    The hook sits in an instance attribute ``call`` shadowing the class's, which ``Layer.__call__`` uses; it
    is set and removed past Keras's attribute tracking, so the layer is left exactly as it was."""
    installed: List[Tuple[Any, Any]] = []
    try:
        for layer, hook in hooks:
            before = layer.__dict__.get("call", _MISSING)
            inner = layer.call

            def call(*args, _inner=inner, _hook=hook, **kwargs):
                return _hook(_inner, args, kwargs)

            object.__setattr__(layer, "call", call)
            installed.append((layer, before))
        yield
    finally:
        for layer, before in reversed(installed):
            if before is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", before)


def _flattener(w: PrunableWeight) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs of ``w``'s layer → ``(tokens, in)``, in the order of the canonical ``(out, in)`` view's columns."""
    layer = w.layer
    if isinstance(layer, keras.layers.Dense):
        n_in = w.shape[1]
        return lambda x: x.reshape(-1, n_in)
    text = layer.equation.replace(" ", "")
    lhs_kernel, out = text.split("->")
    lhs, kernel = lhs_kernel.split(",")
    lhs = lhs.replace("...", "")
    contracted = [c for c in kernel if c in lhs and c not in out]

    def flatten(x):
        lead = x.ndim - len(lhs)
        axes = {c: lead + i for i, c in enumerate(lhs)}
        order = [a for a in range(x.ndim) if a not in {axes[c] for c in contracted}] + [axes[c] for c in contracted]
        return np.transpose(x, order).reshape(-1, w.shape[1])
    return flatten


def _calibration_error(w: PrunableWeight, method: str) -> Optional[str]:
    fix = "Leave it out (excluded_op_names) or give it a group of its own with pruning_type='magnitude'"
    if isinstance(w.layer, keras.layers.Dense) and len(w.shape) == 2:
        return None
    if isinstance(w.layer, keras.layers.EinsumDense):
        text = w.layer.equation.replace(" ", "")
        lhs_kernel, out = text.split("->")
        lhs, kernel = lhs_kernel.split(",")
        batched = [c for c in kernel if c in lhs and c in out]
        summed = [c for c in lhs.replace("...", "") if c not in kernel and c not in out]
        if not batched and not summed:
            return None
        return (f"layer {w.name!r} is an EinsumDense ({w.layer.equation!r}) whose kernel is not one matrix applied "
                f"to every position; one-shot {method} prunes Dense and EinsumDense layers of the form "
                f"'...i,io->...o'. {fix}")
    return (f"layer {w.name!r} is a {type(w.layer).__name__} (kernel {w.native_shape}); one-shot {method} prunes "
            f"Dense and EinsumDense layers (MultiHeadAttention's projections included). {fix}")


# ---- blocks -----------------------------------------------------------------------------------------------
def _sublayers(layer: Any) -> List[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=True, recursive=True)) if flatten is not None else [layer]


def _block_lists(model: keras.Model) -> List[Tuple[str, List[Any]]]:
    """Candidate block lists, outermost first: Sequential models (their layers) and public list attributes of
    two layers or more."""
    out: List[Tuple[str, List[Any]]] = []
    seen = set()
    queue: List[Tuple[str, Any]] = [("", model)]
    while queue:
        path, layer = queue.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Sequential) and len(layer.layers) >= 2:
            out.append((path, list(layer.layers)))
        for attr, value in vars(layer).items():
            if attr.startswith("_"):
                continue
            sub = f"{path}.{attr}" if path else attr
            if isinstance(value, (list, tuple)):
                items = [v for v in value if isinstance(v, keras.layers.Layer)]
                if len(items) >= 2 and len(items) == len(value):
                    out.append((sub, items))
                queue.extend((f"{sub}.{i}", v) for i, v in enumerate(items))
            elif isinstance(value, keras.layers.Layer):
                queue.append((sub, value))
        if isinstance(layer, keras.Model):  # a Functional model's layers are no attributes of it
            queue.extend((f"{path}.{l.name}" if path else l.name, l) for l in layer.layers)
    return out


def find_blocks(model: keras.Model, targets: Mapping[str, PrunableWeight], path: Optional[str] = None
                ) -> Tuple[Optional[str], List[Any]]:
    """``(path, blocks)`` holding ``targets`` — the named one, or the list holding the most of them; ``(None, [])``
    when there is none (the model is then pruned layer by layer)."""
    if path is not None:
        found: Any = model
        for part in [p for p in path.split(".") if p]:
            try:
                found = found[int(part)] if part.isdigit() and isinstance(found, (list, tuple)) else getattr(found, part)
            except (AttributeError, IndexError):
                raise ConfigError(f"blocks={path!r} names nothing in {type(model).__name__}: {part!r} is not there; pass "
                                  f"the attribute path of its list of blocks (e.g. 'blocks') or of a Sequential") from None
        if isinstance(found, keras.Sequential):
            return path, list(found.layers)
        if isinstance(found, (list, tuple)) and found and all(isinstance(b, keras.layers.Layer) for b in found):
            return path, list(found)
        raise ConfigError(f"blocks={path!r} is a {type(found).__name__}, not a keras.Sequential or a list of layers")
    owners = {id(w.layer) for w in targets.values()}
    best: Tuple[int, Optional[str], List[Any]] = (0, None, [])
    for p, blocks in _block_lists(model):
        held = sum(1 for b in blocks for l in _sublayers(b) if id(l) in owners)
        if held > best[0]:
            best = (held, p, blocks)
    return best[1], best[2]


# ---- what a run did ----------------------------------------------------------------------------------------
@dataclass
class CalibrationReport:
    """What a one-shot calibration run did and took (the torch backend's report, without its memory counts).

    Attributes:
        blocks: the path of the block list and how many blocks it has (``(None, 0)``: pruned layer by layer).
        batches: calibration batches; tokens: rows of the pruned layers' inputs in a pass (the most of any layer).
        seconds: wall time.
        sparsity: ``{group index: {block index: sparsity}}`` where OWL spread the target.
        layers: per pruned layer, the method, its sparsity, the block and what the maths reports (SparseGPT:
            the dampening used and the retries a non-positive-definite Hessian needed).
        passes: forward passes over the calibration batches (a block's or the whole model's).
    """

    blocks: Tuple[Optional[str], int]
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    sparsity: Dict[int, Dict[int, float]] = field(default_factory=dict)
    layers: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    passes: int = 0

    def __str__(self) -> str:
        path, n = self.blocks
        where = f"{n} blocks of {path or 'the model'}" if path is not None else "the model, layer by layer"
        lines = [f"one-shot: {len(self.layers)} layers in {where}, {self.batches} batches ({self.tokens:,} tokens), "
                 f"{self.passes} passes, {self.seconds:.1f} s"]
        retries = {k: l["retries"] for k, l in self.layers.items() if l.get("retries")}
        if retries:
            lines.append("more dampening was needed for: " + ", ".join(f"{k} ({v} retries)" for k, v in retries.items()))
        return "\n".join(lines)


class Calibration:
    """One run over the calibrated groups (``wanda``, ``sparse_gpt``) of a :class:`OneShotPruning`."""

    def __init__(self, model: keras.Model, pruners: Sequence[CalibrationPruner], blocks: Optional[str] = None) -> None:
        self.model = model
        self.pruners = list(pruners)
        self.owner = {n: p for p in self.pruners for n in p.modules}
        self.targets: Dict[str, PrunableWeight] = {n: w for p in self.pruners for n, w in p.modules.items()}
        for name, w in self.targets.items():
            error = _calibration_error(w, self.owner[name].method)
            if error:
                raise ConfigError(error)
        self.flatten = {n: _flattener(w) for n, w in self.targets.items()}
        self.path, self.blocks = find_blocks(model, self.targets, blocks)
        in_block = {id(l): i for i, b in enumerate(self.blocks) for l in _sublayers(b)}
        self.block_of = {n: in_block.get(id(w.layer)) for n, w in self.targets.items()}
        self.report = CalibrationReport((self.path, len(self.blocks)))
        if not self.blocks:
            owl = [p for p in self.pruners if p.config["parameters"]["sparsity_allocation"] == "owl"]
            if owl:
                raise ConfigError("sparsity_allocation='owl' spreads the target over the model's repeated blocks, and "
                                  f"{type(model).__name__} has none that could be found (a keras.Sequential or a list "
                                  "attribute of layers); name them with blocks='...' or use the uniform allocation")

    # ---- passes ----------------------------------------------------------------------------------------
    def _call_model(self, x: Any) -> Any:
        try:
            return self.model(x, training=False)
        except (_Stop, PruningStateError):
            raise
        except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as exc:
            raise ConfigError(f"the model rejected a calibration batch of structure {_describe(x)}: "
                              f"{type(exc).__name__}: {exc}") from exc

    def _collect(self, stats: Dict[str, LayerStats]) -> List[Tuple[Any, Callable]]:
        """Recorders folding each layer's inputs into its statistics."""
        hooks = []
        by_layer: Dict[int, List[str]] = {}
        for n in stats:
            by_layer.setdefault(id(self.targets[n].layer), []).append(n)
        for names in by_layer.values():
            layer = self.targets[names[0]].layer

            def hook(call, args, kwargs, names=names, layer=layer):
                x = np.asarray(keras.ops.convert_to_numpy(_first_input(layer, args, kwargs)))
                for n in names:
                    stats[n].add(self.flatten[n](x))
                return call(*args, **kwargs)
            hooks.append((layer, hook))
        return hooks

    def _stats_of(self, names: List[str], batches: Optional[List[Any]] = None, block: Any = None,
                  inputs: Optional[Inputs] = None) -> Dict[str, LayerStats]:
        stats = {n: self.owner[n].new_stats(n) for n in names}
        with recording(self._collect(stats)):
            if block is not None:
                for args, kwargs in inputs:
                    block(*args, **kwargs)
            else:
                for x in batches:
                    self._call_model(x)
        self.report.passes += 1
        self.report.tokens = max([self.report.tokens] + [s.tokens for s in stats.values()])
        return stats

    def _prune(self, names: List[str], stats: Dict[str, LayerStats], block: Optional[int] = None,
               allocation: Optional[Dict[int, List[float]]] = None) -> None:
        for name in names:
            pruner = self.owner[name]
            target = pruner.target_sparsity_ratio
            if allocation and id(pruner) in allocation and block is not None:
                target = allocation[id(pruner)][block]
            info = pruner.prune_layer(name, stats[name], target)
            self.report.layers[name] = dict(info, method=pruner.method, sparsity=target, block=block)

    def _order(self, batches: List[Any], names: List[str]) -> List[str]:
        """``names`` in the order their layers first run (every batch goes through: bad batches are refused here)."""
        fired: List[str] = []
        hooks = []
        for n in names:
            def hook(call, args, kwargs, n=n):
                fired.append(n)
                return call(*args, **kwargs)
            hooks.append((self.targets[n].layer, hook))
        with recording(hooks):
            for x in batches:
                self._call_model(x)
        order = list(dict.fromkeys(fired))
        return order + [n for n in names if n not in order]  # never run: their statistics say so when pruned

    def _capture(self, batches: List[Any], watched: List[str]) -> Tuple[Inputs, List[str]]:
        """Each batch's inputs to the first block, and which of ``watched`` ran before it."""
        inputs: Inputs = []
        fired: List[str] = []

        def grab(call, args, kwargs):
            inputs.append((tuple(args), dict(kwargs)))
            raise _Stop

        def seen(n):
            def hook(call, args, kwargs):
                fired.append(n)
                return call(*args, **kwargs)
            return hook

        hooks = [(self.targets[n].layer, seen(n)) for n in watched] + [(self.blocks[0], grab)]
        with recording(hooks):
            for x in batches:
                got = len(inputs)
                try:
                    self._call_model(x)
                except _Stop:
                    pass
                if len(inputs) == got:
                    raise ConfigError(f"the first block ({self.path}.0, {self.blocks[0].name!r}) never ran on a "
                                      f"calibration batch; are the blocks used in the model's call?")
        self.report.passes += 1
        return inputs, list(dict.fromkeys(fired))

    @staticmethod
    def _run_block(block: Any, inputs: Inputs) -> Inputs:
        out = []
        for args, kwargs in inputs:
            result = block(*args, **kwargs)
            hidden = result[0] if isinstance(result, (tuple, list)) else result
            if args:
                out.append(((hidden,) + tuple(args[1:]), kwargs))
            else:
                first = [p for p in inspect.signature(type(block).call).parameters if p != "self"][0]
                out.append(((), dict(kwargs, **{first: hidden})))
        return out

    def _in_block(self, i: int) -> List[str]:
        return [n for n, b in self.block_of.items() if b == i]

    # ---- the run -----------------------------------------------------------------------------------------
    def check(self, batches: List[Any]) -> None:
        """Every batch through the model (or up to the first block) before any weight changes."""
        if self.blocks:
            self._capture(batches, [])
        else:
            self._order(batches, list(self.targets))

    def run(self, batches: List[Any]) -> CalibrationReport:
        start = time.perf_counter()
        self.report.batches = len(batches)
        if not self.blocks:
            for name in self._order(batches, list(self.targets)):
                self._guard(lambda: self._prune([name], self._stats_of([name], batches)), f"layer {name!r}")
        else:
            outside = [n for n, b in self.block_of.items() if b is None]
            inputs, before = self._capture(batches, outside)
            if before:  # layers in front of the blocks change what the blocks see: prune them, capture again
                self._guard(lambda: self._prune(before, self._stats_of(before, batches)), "the layers before the blocks")
                inputs, _ = self._capture(batches, [])
            allocation = self._allocation(inputs)
            self._blocks(inputs, allocation)
            after = [n for n in outside if n not in before]
            if after:
                self._guard(lambda: self._prune(after, self._stats_of(after, batches)), "the layers after the blocks")
        self.report.seconds = time.perf_counter() - start
        return self.report

    def _guard(self, fn: Callable[[], None], where: str) -> None:
        try:
            fn()
        except (ConfigError, PruningStateError, RuntimeError, ValueError, TypeError) as exc:
            raise PruningStateError(f"one-shot pruning failed at {where}: {type(exc).__name__}: {exc}. Pruned so far: "
                                    f"{', '.join(self.report.layers) or 'nothing'}; the other layers are unchanged"
                                    ) from exc

    def _allocation(self, inputs: Inputs) -> Dict[int, List[float]]:
        """Per OWL pruner, one sparsity per block from the dense blocks' outliers (a first pass)."""
        owl = [p for p in self.pruners if p.config["parameters"]["sparsity_allocation"] == "owl"]
        if not owl:
            return {}
        ratios: Dict[int, List[float]] = {id(p): [0.0] * len(self.blocks) for p in owl}
        for i, block in enumerate(self.blocks):
            names = [n for n in self._in_block(i) if self.owner[n] in owl]
            if names:
                stats = self._stats_of(names, block=block, inputs=inputs)
                for p in owl:
                    mine = [n for n in names if self.owner[n] is p]
                    if mine:
                        ratios[id(p)][i] = outlier_ratio([p.outlier_scores(n, stats[n]) for n in mine],
                                                         p.config["parameters"]["owl_m"])
            inputs = self._run_block(block, inputs)
        out = {}
        for p in owl:
            used = [i for i in range(len(self.blocks)) if any(self.owner[n] is p for n in self._in_block(i))]
            out[id(p)] = block_sparsities(ratios[id(p)], used, len(self.blocks), p.target_sparsity_ratio,
                                          p.config["parameters"]["owl_lambda"])
            self.report.sparsity[self.pruners.index(p)] = {i: out[id(p)][i] for i in used}
        return out

    def _blocks(self, inputs: Inputs, allocation: Dict[int, List[float]]) -> None:
        done: List[int] = []
        for i, block in enumerate(self.blocks):
            names = self._in_block(i)
            try:
                if names:
                    self._prune(names, self._stats_of(names, block=block, inputs=inputs), block=i, allocation=allocation)
                    done.append(i)
                if i + 1 < len(self.blocks):
                    inputs = self._run_block(block, inputs)
                    self.report.passes += 1
            except (ConfigError, PruningStateError, RuntimeError, ValueError, TypeError) as exc:
                raise PruningStateError(
                    f"one-shot pruning failed in block {i} ({self.path}.{i}, {block.name!r}): {type(exc).__name__}: "
                    f"{exc}. Pruned so far: blocks {done or 'none'} ({len(self.report.layers)} layers); the other "
                    f"blocks are unchanged") from exc


# ---- the result and the entry point ------------------------------------------------------------------------
class OneShotPruning:
    """A Keras model pruned at once: what :func:`prune_once` (``prepare_pruning(..., dataloader=...)``) returns.

    Attributes:
        model: the model (its pruned kernels hold the zeros; nothing else of it changed).
        session: the core's session (one pruner per config group) and its ``layer_plan``.
        calibration: what the ``wanda`` / ``sparse_gpt`` run did (:class:`CalibrationReport`), or None.
    """

    def __init__(self, model: keras.Model, session: PruningSession, weights: List[PrunableWeight],
                 calibration: Optional[CalibrationReport]) -> None:
        self.model, self.session, self.calibration = model, session, calibration
        self._weights = weights

    @property
    def pruners(self) -> List[BasePruner]:
        return self.session.pruners

    @property
    def masks(self) -> Dict[str, np.ndarray]:
        """``{layer: keep-mask}`` in the canonical ``(out, in, *kernel)`` layout (True = kept)."""
        return {n: p._get_mask(n) for p in self.pruners for n in p.modules}

    def report(self) -> SparsityReport:
        """Per-layer and total sparsity of every prunable weight, with each layer's pattern or why it is dense —
        the torch backend's table."""
        plan = self.session.layer_plan
        layers = records.layer_records(self.session.config.groups, [[l.name for l in g] for g in plan.groups])
        dense = {n: {"note": why} for n, why in plan.dense().items()}
        arrays = {w.name: w.layout.to_canonical(to_numpy(w.variable)) for w in self._weights}
        return records.report(arrays, layers, dense, self.masks)

    def strip(self) -> keras.Model:
        """The model, as it is: one-shot pruning leaves nothing in it to remove (no wrapper, no mask variable)."""
        return self.model

    def __repr__(self) -> str:
        kinds = sorted({p.config["pruning_type"] for p in self.pruners})
        return f"OneShotPruning({self.model.name!r}, {', '.join(kinds)}, {len(self.masks)} layers)"


def prune_once(model: keras.Model, config: ConfigLike, data: Any = None, *, blocks: Optional[str] = None,
               batch_size: int = 32) -> OneShotPruning:
    """Prune a built Keras model at once — ``magnitude`` from its weights, ``wanda`` / ``sparse_gpt`` from
    calibration data — with the core's maths; the same as ``prepare_pruning(model, config, dataloader=data)``.

    Args:
        model: a built ``keras.Model`` (Sequential, Functional or subclassed); it need not be compiled.
        config: a :class:`WeightPruningConfig` or a dict of its keys; every group is pruned to its target now.
        data: the calibration data: numpy arrays (``x``, a dict, or ``(x, y)``; cut into batches of
            ``batch_size``), a ``tf.data.Dataset``, or an iterable of batches (``x`` or ``(x, y)``). Only
            ``wanda`` / ``sparse_gpt`` groups need it.
        blocks: the attribute path of the model's list of repeated blocks (``"blocks"``, ``"encoder.layers"``) or
            of a Sequential, when it cannot be found; without blocks the model is pruned layer by layer.
        batch_size: batch size for numpy calibration data.

    Returns:
        A :class:`OneShotPruning` (``report()``, ``masks``, ``calibration``, ``strip()``).

    Raises:
        ConfigError: an invalid config (the core's checks: method, pattern, target), a gradient criterion,
            a layer a calibrated method cannot prune, empty or rejected calibration data — before any weight changes.
        PruningStateError: the model is not built; a failure midway (it names what was pruned).

    >>> import numpy as np, keras
    >>> from nc_prune import WeightPruningConfig
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc"), keras.layers.Dense(2)])
    >>> cfg = WeightPruningConfig(pruning_type="wanda", pattern="2:4", target_sparsity=0.5)
    >>> pruning = prune_once(model, cfg, np.random.rand(64, 16).astype("float32"))
    >>> pruning.report()["fc"].ratio
    0.5
    """
    from .api import _check_model

    _check_model(model)
    config = as_config(config)
    found = {w.name: w for w in find_prunable_weights(model)}
    session = PruningSession(config, [w.info() for w in found.values()],
                             lambda plan: {layer.name: found[layer.name] for layer in plan}, KerasOneShotPruner)
    grads = sorted({p.config["pruning_type"] for p in session.pruners if p.needs_grad})
    if grads:
        raise ConfigError(f"pruning_type {', '.join(map(repr, grads))} scores weights by their gradients, which one-shot "
                          f"pruning in Keras does not compute; use pruning_type='magnitude', 'wanda' or 'sparse_gpt', or "
                          f"prune during training with prepare_pruning(model, config) and model.fit")
    calibrated = [p for p in session.pruners if getattr(p, "calibrated", False)]
    calibration = batches = None
    if calibrated:
        if data is None:
            kinds = sorted({p.config["pruning_type"] for p in calibrated})
            raise ConfigError(f"pruning_type {', '.join(kinds)} learns from calibration data; pass dataloader= (or "
                              f"prune_once's data) with a few batches of the model's inputs")
        batches = calibration_batches(data, batch_size)
        calibration = Calibration(model, calibrated, blocks)
        calibration.check(batches)  # bad batches are refused before any weight changes
    session.on_train_begin(None)
    for p in session.pruners:
        if not getattr(p, "calibrated", False) and p.is_pruning_step(p.scheduler.last_pruning_step()):
            p.update_masks(p.scheduler.last_pruning_step())
    report = calibration.run(batches) if calibration is not None else None
    return OneShotPruning(model, session, list(found.values()), report)
