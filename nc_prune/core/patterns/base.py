"""The ``Pattern`` base class: per-layer units, and local or global mask generation over them.

A pattern splits each layer's weight into *units* — blocks for ``NxM``, groups of M for ``N:M`` — and
gives each unit one score. Mask generation then only ranks units. Subclasses implement :meth:`units`;
everything else (global and local scope, per-layer bounds, monotone masks, exact counts) is shared.

Arrays here are numpy, in the canonical layout ``(out, in, *kernel)``; masks are boolean, True = keep.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import arrays
from ..coupling import CoupledUnits
from ..config import DEFAULTS, parse_pattern
from ..errors import ConfigError, NoPrunableLayerError, PatternShapeError, warn_user
from ..registry import PATTERNS
from .. import selection
from ..selection import (Cut, Cutter, as_score_array, count_at_least, count_for_ratio, global_cuts, layer_cut,
                         lowest_mask)

REDUCERS = {"mean": np.mean, "sum": np.sum, "max": np.max}

#: ``decide(unit_scores, already_pruned)`` → which units of one piece are pruned (see ``LayerUnits.prune_mask``).
Decide = Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]


class LayerUnits:
    """How one layer's weight splits into units. Subclass per pattern.

    Attributes:
        shape: the weight's shape in the canonical layout.
        n_units: how many units the layer has.
        unit_size: how many weights one pruned unit zeroes.
        ratio_scale: unit ratio per element ratio (``M/N`` for ``N:M``: a pruned group zeroes N of M).
    """

    shape: Tuple[int, ...]
    n_units: int
    unit_size: int
    ratio_scale: float = 1.0

    def reduce(self, score: np.ndarray, reduce_type: str, keep: Optional[np.ndarray]) -> np.ndarray:
        """One score per unit (1-D, length ``n_units``)."""
        raise NotImplementedError

    def already_pruned(self, keep: np.ndarray) -> np.ndarray:
        """Boolean per unit: the unit is pruned in the mask ``keep``."""
        raise NotImplementedError

    def expand(self, prune_units: np.ndarray) -> np.ndarray:
        """Element prune mask (True = pruned) of the layer's shape from a per-unit prune mask.

        Called after :meth:`reduce` on the same object (N:M remembers which N weights of a group go).
        """
        raise NotImplementedError

    def block_size(self) -> List[int]:
        raise NotImplementedError

    def score_pieces(self, score: np.ndarray, reduce_type: str,
                     keep: Optional[np.ndarray]) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """The unit scores in unit order, a piece at a time, each with its piece of :meth:`already_pruned`.

        The default is one piece (:meth:`reduce`); the built-in units read a few rows at a time, so a large
        layer never needs a temporary of its full size. The second item is None when ``keep`` is None.
        """
        yield self.reduce(score, reduce_type, keep), None if keep is None else self.already_pruned(keep)

    def prune_mask(self, score: np.ndarray, reduce_type: str, keep: Optional[np.ndarray], decide: Decide) -> np.ndarray:
        """Element prune mask (True = pruned) of the layer's shape.

        ``decide`` is called on each piece of :meth:`score_pieces`, in order, and returns which of its units
        are pruned.
        """
        return self.expand(np.concatenate([decide(u, d) for u, d in self.score_pieces(score, reduce_type, keep)]))


class Pattern:
    """Base of every pruning pattern (INC's ``Pattern`` API).

    Args:
        config: a resolved pruner config (a dict with at least ``pattern``); missing keys take
            :data:`~nc_prune.core.config.DEFAULTS`.

    Attributes:
        pattern: the pattern string, e.g. ``"4x1"``.
        is_global: whether masks are ranked across layers (``pruning_scope="global"``).
        global_target: ``"weights"`` — a global target is a fraction of the weights, each unit counting its
            size when units differ in size between layers (``1xchannel`` on rows of different lengths) — or
            ``"units"``, INC's fraction of the units.
        invalid_layers: layers whose shape does not fit, with the reason; they stay dense.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        cfg = dict(DEFAULTS)
        cfg.update(config)
        self.config = cfg
        self.pattern: str = cfg["pattern"]
        self.is_global: bool = cfg["pruning_scope"] == "global"
        self.reduce_type: str = cfg["criterion_reduce_type"]
        self.min_sparsity_ratio_per_op: float = float(cfg["min_sparsity_ratio_per_op"])
        self.max_sparsity_ratio_per_op: float = float(cfg["max_sparsity_ratio_per_op"])
        self.global_target: str = cfg["global_target"]
        self.invalid_layers: Dict[str, str] = {}
        self._warned: set = set()

    # ---- what subclasses provide ----------------------------------------------------------------
    def units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        """The unit split of a layer; raise :class:`PatternShapeError` when the shape does not fit."""
        raise NotImplementedError

    # ---- shape checks ---------------------------------------------------------------------------
    def layer_units(self, name: str, shape: Tuple[int, ...]) -> LayerUnits:
        """:meth:`units` of a layer, after the checks every pattern shares (a layer with no weights)."""
        shape = tuple(int(s) for s in shape)
        if 0 in shape:
            raise PatternShapeError(
                f"layer {name!r} has weight shape {shape} with no weights in it; pattern {self.pattern!r} has "
                f"nothing to prune there"
            )
        return self.units(name, shape)

    def check_shape(self, name: str, shape: Tuple[int, ...]) -> Optional[str]:
        """``None`` when the layer fits the pattern, else the reason it does not."""
        try:
            self.layer_units(name, tuple(shape))
        except PatternShapeError as exc:
            return str(exc)
        return None

    def _fitting(self, data: Mapping[str, Any]) -> Dict[str, LayerUnits]:
        out = {}
        for name, value in data.items():
            try:
                out[name] = self.layer_units(name, _shape(value))
            except PatternShapeError as exc:
                self.invalid_layers[name] = str(exc)
                if name not in self._warned:
                    self._warned.add(name)
                    warn_user(f"{exc}; layer {name!r} is left dense")
        if data and not out:
            raise NoPrunableLayerError(
                f"no layer fits pattern {self.pattern!r}: "
                + "; ".join(f"{n}: {r}" for n, r in self.invalid_layers.items())
            )
        return out

    # ---- INC API --------------------------------------------------------------------------------
    def get_masks(self, scores, target_sparsity_ratio: float, pre_masks=None,
                  max_sparsity_ratio_per_layer: Optional[float] = None):
        """New keep-masks reaching ``target_sparsity_ratio`` (global or local as configured).

        Units already pruned in ``pre_masks`` stay pruned, so masks only grow over a schedule.
        """
        fn = self.get_masks_global if self.is_global else self.get_masks_local
        return fn(scores, target_sparsity_ratio, pre_masks, max_sparsity_ratio_per_layer)

    def get_masks_global(self, scores, target_sparsity_ratio, pre_masks=None, max_sparsity_ratio_per_layer=None):
        """One ranking over every unit of every layer, within each layer's min/max bounds."""
        return self._masks(scores, target_sparsity_ratio, pre_masks, max_sparsity_ratio_per_layer, True)

    def get_masks_local(self, scores, target_sparsity_ratio, pre_masks=None, max_sparsity_ratio_per_layer=None):
        """The target applied to each layer on its own, within its min/max bounds."""
        return self._masks(scores, target_sparsity_ratio, pre_masks, max_sparsity_ratio_per_layer, False)

    def get_mask_single(self, score, exact_sparsity_ratio: float):
        """Keep-mask of one layer pruning ``floor(units * ratio)`` units, ignoring bounds."""
        s = arrays.to_numpy(score)
        lu = self._fitting({"layer": s})["layer"]
        unit_scores = as_score_array(lu.reduce(s, self.reduce_type, None), "layer")
        n = count_for_ratio(lu.n_units, min(1.0, exact_sparsity_ratio * lu.ratio_scale))
        return arrays.like(~lu.expand(lowest_mask(unit_scores, n)), score)

    def get_block_size_dict(self, data) -> Dict[str, List[int]]:
        """``{layer: [rows, cols]}`` of each fitting layer's unit in the 2-D view."""
        return {n: lu.block_size() for n, lu in self._fitting(data).items()}

    def get_sparsity_ratio(self, pre_masks, return_dict: bool = False):
        """Fraction of zero entries over all masks (or a dict with counts when ``return_dict``)."""
        zero = total = 0
        for m in pre_masks.values():
            a = arrays.to_numpy(m)
            total += a.size
            zero += a.size - int(np.count_nonzero(a))
        ratio = zero / total if total else 0.0
        if return_dict:
            return {"sparsity_ratio": ratio, "zero_cnt": zero, "total_cnt": total}
        return ratio

    def get_pattern_lock_masks(self, modules):
        """Keep-masks marking the non-zero weights: locks in the sparsity a model already has."""
        return {n: arrays.like(arrays.to_numpy(w) != 0, w) for n, w in modules.items()}

    # ---- shared machinery -----------------------------------------------------------------------
    def prunes_coupling(self, coupling: Any, selected: Any) -> bool:
        """Whether this pattern prunes ``coupling`` as units when a group selects the layers ``selected``
        (a pattern with units inside single layers prunes none)."""
        return False

    def couple(self, couplings: Sequence[Any]) -> "Pattern":
        """Rank these :class:`~nc_prune.core.coupling.Coupling` s as units of their own: their member layers'
        masks then come from the couplings (heads, channels across layers), the other layers' from the pattern."""
        self.couplings = list(couplings)
        return self

    def _items(self, scores) -> List["_Item"]:
        """What selection ranks: each coupling whose members are all given, then each other fitting layer."""
        couplings = [c for c in getattr(self, "couplings", []) if all(l in scores for l in c.layers)]
        covered = {l for c in couplings for l in c.layers}
        items: List[_Item] = [_Coupled(CoupledUnits(c, {l: _shape(scores[l]) for l in c.layers}), self)
                              for c in couplings]
        rest = {n: v for n, v in _LazyItems(scores, covered).items()}
        items += [_Single(n, lu, self) for n, lu in self._fitting(rest).items()] if rest else []
        if scores and not items:
            raise NoPrunableLayerError(f"no layer fits pattern {self.pattern!r}")
        return items

    def _masks(self, scores, target, pre_masks, max_ratio, is_global):
        """Masks read the scores one layer at a time, a few times over, and keep none of them.

        ``scores[name]`` is looked up again for every read (two to four reads, then one for the mask), so a
        mapping may compute a layer's scores on access; values need ``shape`` and numpy conversion only.
        """
        if not 0.0 <= float(target) <= 1.0:
            raise ConfigError(f"target sparsity {target!r} is outside [0, 1]")
        max_ratio = self.max_sparsity_ratio_per_op if max_ratio is None else float(max_ratio)
        min_ratio = min(self.min_sparsity_ratio_per_op, max_ratio)
        pre = {n: arrays.to_numpy(pre_masks[n]).astype(bool, copy=False)
               for n in scores if pre_masks is not None and n in pre_masks}
        for n, m in pre.items():
            shape = _shape(scores[n])
            if m.shape != shape:
                raise ConfigError(f"pre_masks[{n!r}] has shape {m.shape} but its scores have shape {shape}")
        items = self._items(scores)
        sources, sizes, lo, hi, minimum, forced = [], [], [], [], [], []
        for item in items:
            done = item.forced(pre)
            forced.append(done > 0)
            n = item.n_units
            lo_l = count_at_least(n, min(1.0, min_ratio * item.ratio_scale))
            hi_l = count_for_ratio(n, min(1.0, max_ratio * item.ratio_scale))
            if not is_global:
                want = count_for_ratio(n, min(1.0, float(target) * item.ratio_scale))
                lo_l = hi_l = min(max(want, lo_l), hi_l)
            minimum.append(lo_l)
            sources.append(item.source(scores, pre, done > 0))
            sizes.append(n)
            lo.append(max(lo_l, done))
            hi.append(max(hi_l, done))
        cache = selection.cache_budget(max(item.weights for item in items))
        if is_global:
            weights = self._unit_weights(items)
            if weights is None:  # units of one size: the target counts units (the same as weights)
                k, what, w = (count_for_ratio(sum(sizes), min(1.0, float(target) * items[0].ratio_scale)), "units",
                              [1] * len(sizes))
            else:  # units of unequal size: the target is a fraction of the weights, each unit counts its size
                k, what, w = count_for_ratio(sum(i.weights for i in items), min(1.0, float(target))), "weights", weights
            most = sum(h * x for h, x in zip(hi, w))
            need = sum(m * x for m, x in zip(minimum, w))
            if k > most:
                warn_user(
                    f"target sparsity {target} needs {k} pruned {what} but max_sparsity_ratio_per_op={max_ratio} "
                    f"allows {most}; pruning {most}")
            elif k < need:
                warn_user(
                    f"target sparsity {target} asks for {k} pruned {what} but min_sparsity_ratio_per_op={min_ratio} "
                    f"needs at least {need}; pruning {max(need, sum(l * x for l, x in zip(lo, w)))}")
            cuts, _ = global_cuts(sources, sizes, k, lo, hi, cache, weights)
        else:
            cuts = [layer_cut(src, c, n, cache) for src, c, n in zip(sources, lo, sizes)]
        pruned: Dict[str, np.ndarray] = {}  # several couplings may hold slices of one layer (a KV group's heads)
        for item, cut, was_forced in zip(items, cuts, forced):
            for name, prune in item.prune_masks(scores, pre, cut, was_forced).items():
                if name in pruned:
                    pruned[name] |= prune
                else:
                    pruned[name] = prune
        out: Dict[str, Any] = {}
        for name in scores:
            keep = np.logical_not(pruned[name]) if name in pruned else np.ones(_shape(scores[name]), dtype=bool)
            if name in pre:
                keep &= pre[name]
            out[name] = arrays.like(keep, scores[name])
        return out

    def _unit_weights(self, items: Sequence["_Item"]) -> Optional[List[int]]:
        """What one unit of each item counts for in a global target: None when every unit has the same size
        or ``global_target="units"`` (INC's counting), else each item's unit size in weights."""
        sizes = [item.unit_size for item in items]
        if self.global_target == "units" or len(set(sizes)) <= 1:
            return None
        return sizes


class _LazyItems(Mapping):
    """The layers of ``scores`` outside ``covered``, read lazily (a mapping may compute scores on access)."""

    def __init__(self, scores, covered) -> None:
        self._scores, self._names = scores, [n for n in scores if n not in covered]

    def __getitem__(self, name):
        return self._scores[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _Item:
    """What selection ranks as one "layer": a layer of the pattern, or a coupling of slices of several layers."""

    n_units: int
    unit_size: int
    ratio_scale: float
    weights: int

    def forced(self, pre: Mapping[str, np.ndarray]) -> int:
        """Units the earlier masks already prune (they stay pruned and rank first)."""
        raise NotImplementedError

    def source(self, scores, pre, forced: bool):
        """A function yielding the unit scores, piece by piece, cleaned for selection."""
        raise NotImplementedError

    def prune_masks(self, scores, pre, cut: Cut, forced: bool) -> Dict[str, np.ndarray]:
        """``{layer: element prune mask}`` for the units ``cut`` prunes."""
        raise NotImplementedError


class _Single(_Item):
    def __init__(self, name: str, lu: LayerUnits, pattern: Pattern) -> None:
        self.name, self.lu, self.pattern = name, lu, pattern
        self.n_units, self.unit_size, self.ratio_scale = lu.n_units, lu.unit_size, lu.ratio_scale
        self.weights = int(np.prod(lu.shape))

    def forced(self, pre):
        keep = pre.get(self.name)
        return 0 if keep is None else int(np.count_nonzero(self.lu.already_pruned(keep)))

    def source(self, scores, pre, forced):
        name, lu, reduce_type, keep = self.name, self.lu, self.pattern.reduce_type, pre.get(self.name)

        def read() -> Iterator[np.ndarray]:
            for units, done in lu.score_pieces(arrays.to_numpy(scores[name]), reduce_type, keep):
                yield _unit_scores(units, done, name, forced)
        return read

    def prune_masks(self, scores, pre, cut, forced):
        return {self.name: self.lu.prune_mask(arrays.to_numpy(scores[self.name]), self.pattern.reduce_type,
                                              pre.get(self.name), _decider(self.name, cut, forced))}


class _Coupled(_Item):
    def __init__(self, cu: CoupledUnits, pattern: Pattern) -> None:
        self.cu, self.pattern = cu, pattern
        self.n_units, self.unit_size, self.ratio_scale, self.weights = cu.n_units, cu.unit_size, 1.0, cu.weights
        self.name = cu.coupling.name

    def _keep(self, pre):
        given = {l: pre[l] for l in self.cu.layers if l in pre}
        return given or None

    def forced(self, pre):
        keep = self._keep(pre)
        return 0 if keep is None else int(np.count_nonzero(self.cu.already_pruned(keep)))

    def _units(self, scores, pre, forced):
        units = self.cu.reduce({l: arrays.to_numpy(scores[l]) for l in self.cu.layers}, self.pattern.reduce_type, None)
        keep = self._keep(pre)
        return _unit_scores(units, None if keep is None else self.cu.already_pruned(keep), self.name, forced)

    def source(self, scores, pre, forced):
        return lambda: iter([self._units(scores, pre, forced)])

    def prune_masks(self, scores, pre, cut, forced):
        return self.cu.expand(Cutter(cut)(self._units(scores, pre, forced)))


def _shape(value) -> Tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else np.shape(value)))


def _unit_scores(units: np.ndarray, done: Optional[np.ndarray], name: str, forced: bool) -> np.ndarray:
    """Clean unit scores (float, no NaN, no -0.0). When the layer has units already pruned, they score -inf
    and rank first — ahead of a score of -inf passed in, which ranks as the lowest finite value."""
    a = as_score_array(units, name)
    if forced:
        np.maximum(a, np.finfo(a.dtype).min, out=a)
        a[done] = -np.inf
    return a


def _decider(name: str, cut: Cut, forced: bool) -> Decide:
    cutter = Cutter(cut)
    return lambda units, done: cutter(_unit_scores(units, done, name, forced))


def get_pattern(config: Mapping[str, Any]) -> Pattern:
    """The pattern object a config asks for (``"4x1"`` → :class:`PatternNxM`, ``"2:4"`` → :class:`PatternNInM`)."""
    pattern = config.get("pattern", DEFAULTS["pattern"]) if isinstance(config, Mapping) else config
    kind, _ = parse_pattern(pattern)
    cfg = dict(config) if isinstance(config, Mapping) else {"pattern": pattern}
    return PATTERNS.get(kind)(cfg)
