"""``pruning_type="retrain_free"``: heads and channels of a trained model pruned without retraining.

After Kwon et al., *A Fast Post-Training Pruning Framework for Transformers* (2022), as INC ran it, in
three steps over a few labelled calibration batches (run forward and backward; no weight is trained):

1. **Fisher scores.** Give each unit (a head, an FFN channel, a channel of a layer) a mask ``m = 1`` that
   scales what it feeds on: the input columns of the layer that reads it (``o``'s columns of a head,
   ``down``'s column of a channel) or, for a unit of one layer, its own entries. The loss's gradient in
   that mask is ``g = Σ w·∂L/∂w`` over those entries; the unit's score is the empirical Fisher ``Σ_b g_b²``
   over batches — the loss a removal costs, to second order. Selection (global or local, bounds, every
   pattern's units) ranks units by it.
2. **Mask rearrangement.** Per layer (per coupling), the units to prune are re-chosen, as many as
   selection gave it, to lower ``Σ_b (Σ_{u pruned} g_bu)²`` — the Fisher with the units' interactions
   inside the layer, not only its diagonal: one pass of swaps from the lowest scores up, each swap taken
   only when it lowers that sum.
3. **Weight fix** (``parameters["weight_fix"]="least_squares"``, the default; ``"none"`` keeps INC's
   weights). The kept units' columns of each reading Linear layer are scaled, ``s_u`` per unit, so that
   the layer's output over the calibration inputs is as close as possible to the unpruned output:
   ``min E‖Σ_kept s_u W_u x_u − Σ_all W_u x_u‖² + λ‖s − 1‖²`` from the inputs' second moment, in closed
   form (``λ = dampening_frac × mean diag``). What it did is in :attr:`RetrainFreePruner.fixes`.

Patterns: whole channels (``"channelx1"``, ``"1xchannel"``, ``"channelxM"``, ``"Nxchannel"``, coupled across
layers as the pattern's ``coupled`` parameter says) and heads (``"mha"``). Scores are per unit, so
``criterion_reduce_type`` does not apply. Training-time use is refused (it never trains): prune with
``prepare_pruning(model, config, dataloader=..., loss_func=...)`` or ``on_train_begin(dataloader)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import arrays
from ..config import parse_pattern
from ..coupling import CoupledUnits, Coupling, Slice
from ..errors import PruningStateError
from ..parameters import Param, choice, number
from ..pruner import BasePruner
from ..registry import register_pruner

FIXES = ("least_squares", "none")
HEADS = ("mha", "head")


def rearrange(grads: np.ndarray, pruned: np.ndarray, forced: Optional[np.ndarray] = None) -> np.ndarray:
    """Re-choose ``pruned.sum()`` units to lower ``Σ_b (Σ_{u∈S} g_bu)²`` (one pass of swaps).

    Args:
        grads: ``(batches, units)`` — each batch's mask gradient of each unit.
        pruned: boolean per unit, the selection's choice (its count is kept).
        forced: units that must stay pruned (pruned before); they are in the sum but never swapped out.

    Returns:
        The new boolean per unit; its sum equals ``pruned.sum()`` and its objective is never higher.

    >>> g = np.array([[1., -1, 0.5], [1., -1, 0.5]])   # units 0 and 1 cancel each other
    >>> rearrange(g, np.array([False, False, True]), None).tolist()
    [False, False, True]
    >>> rearrange(g, np.array([True, False, True]), None).tolist()   # {0, 1}: sum 0 < {0, 2}: 4.5
    [True, True, False]
    """
    g = np.asarray(grads, dtype=np.float64)
    fisher = g.T @ g
    chosen = np.asarray(pruned, dtype=bool).copy()
    forced = np.zeros_like(chosen) if forced is None else np.asarray(forced, dtype=bool)
    if not chosen.any() or chosen.all():
        return chosen
    diag = np.diag(fisher)
    v = fisher[:, chosen].sum(axis=1)  # (F 1_S)_i
    for j in np.argsort(diag, kind="stable"):
        if chosen[j] or forced[j]:
            continue
        v_added = v + fisher[:, j]  # with j in S: dropping i changes the objective by -2 v_i + F_ii
        cost = np.where(chosen & ~forced, -2.0 * v_added + diag, np.inf)
        i = int(np.argmin(cost))
        if cost[i] < -2.0 * v_added[j] + diag[j]:  # dropping i beats dropping j again: swap
            chosen[i], chosen[j] = False, True
            v = v_added - fisher[:, i]
    return chosen


def objective(grads: np.ndarray, pruned: np.ndarray) -> float:
    """``Σ_b (Σ_{u pruned} g_bu)²`` — what :func:`rearrange` lowers."""
    return float((np.asarray(grads, dtype=np.float64)[:, pruned].sum(axis=1) ** 2).sum())


def least_squares_scales(weight: np.ndarray, xtx: np.ndarray, s: Slice, units: int, kept: np.ndarray,
                         dampening_frac: float) -> Tuple[np.ndarray, float, float]:
    """Per-unit scales of a reading layer's kept input columns that best restore its output.

    Args:
        weight: the reading layer's ``(out, in)`` weight (unpruned values of the kept columns).
        xtx: ``Σ x xᵀ`` of its inputs, ``(in, in)``.
        s: its ``"in"`` slice of the units (``width`` columns per unit from ``offset``).
        units: how many units the slice has.
        kept: boolean per unit.
        dampening_frac: the ridge towards ``s = 1``, as a fraction of the mean diagonal.

    Returns:
        ``(scales of the kept units, relative output error before, after)``; errors are
        ``E‖pruned output − unpruned output‖² / E‖unpruned output of the units‖²`` over the inputs.
    """
    w = np.asarray(weight, dtype=np.float64)
    cols = s.offset + np.arange(units * s.width)
    m = (w[:, cols].T @ w[:, cols]) * np.asarray(xtx, dtype=np.float64)[np.ix_(cols, cols)]
    g = m.reshape(units, s.width, units, s.width).sum(axis=(1, 3))  # E[c_a · c_b] of the units' outputs c_u
    total = float(g.sum())
    k = np.flatnonzero(kept)
    gkk, b = g[np.ix_(k, k)], g[k].sum(axis=1)
    lam = dampening_frac * float(np.mean(np.diag(gkk))) if k.size else 0.0
    ones = np.ones(k.size)
    scales = np.linalg.solve(gkk + lam * np.eye(k.size), b + lam * ones) if k.size else ones

    def error(x: np.ndarray) -> float:
        return float(x @ gkk @ x - 2 * x @ b + total) / total if total > 0 else 0.0

    return scales, error(ones), error(scales)


@register_pruner("retrain_free")
class RetrainFreePruner(BasePruner):
    """Fisher-scored heads and channels, rearranged per layer, kept columns fixed by least squares."""

    one_shot_only = True
    PARAMETERS = {
        "weight_fix": Param("least_squares", choice(*FIXES),
                            "after masking, rescale the kept units' columns of each reading Linear to restore its "
                            "output (least squares), or leave the weights as they are ('none', INC's)"),
        "dampening_frac": Param(0.01, number(0.0, 1.0), "ridge of the weight fix towards no change, of mean diag"),
    }

    @classmethod
    def config_error(cls, resolved: Mapping[str, Any]) -> Optional[str]:
        kind, sizes = parse_pattern(resolved["pattern"])
        if kind in HEADS or (kind == "NxM" and "channel" in sizes):
            return None
        return (f"pruning_type='retrain_free' removes whole channels or heads: pattern 'channelx1' (a layer's input "
                f"channels), '1xchannel' (its output channels) or 'mha' (attention heads); pattern "
                f"{resolved['pattern']!r} is not one of them")

    def __init__(self, config, modules) -> None:
        super().__init__(config, modules)
        self.pattern.reduce_type = "mean"  # every entry of a unit carries the unit's Fisher score
        self._grads: Dict[str, List[np.ndarray]] = {}
        self._no_grad: Dict[str, str] = {}  # unit set -> a reading layer that had no gradient
        self._units: Optional[List[Tuple[CoupledUnits, List[Slice]]]] = None
        self.input_stats: Dict[str, Any] = {}
        #: ``{reading layer: {"units_kept", "error_before", "error_after"}}`` of the last weight fix.
        self.fixes: Dict[str, Dict[str, float]] = {}

    @property
    def needs_grad(self) -> bool:
        return True

    # ---- units: couplings, and each other layer's channels as a coupling of its own --------------
    def unit_sets(self) -> List[Tuple[CoupledUnits, List[Slice]]]:
        """``[(units, slices whose mask gradient scores them)]`` for every coupling and other fitting layer."""
        if self._units is None:
            shapes = {n: tuple(self._to_canonical(n, self._weight(n)).shape) for n in self.modules}
            out = []
            couplings = [c for c in self.couplings if all(l in shapes for l in c.layers)]
            covered = {l for c in couplings for l in c.layers}
            for c in couplings:
                cu = CoupledUnits(c, {l: shapes[l] for l in c.layers})
                readers = [s for s in c.slices if s.axis == "in"]
                out.append((cu, readers or list(c.slices)))
            kind, sizes = parse_pattern(self.config["pattern"])
            for name, shape in shapes.items():
                if kind in HEADS or name in covered or self.pattern.check_shape(name, shape) is not None:
                    continue  # a head is always a coupling; a layer the pattern does not fit stays dense
                bh, bw = sizes
                sl = Slice(name, "in", int(bw)) if bh == "channel" else Slice(name, "out", int(bh))
                size = shape[1] if sl.axis == "in" else shape[0]
                cu = CoupledUnits(Coupling(name, "channel", size // sl.width, (sl,)), {name: shape})
                out.append((cu, [sl]))
            self._units = out
        return self._units

    def input_stats_layers(self) -> List[str]:
        """Layers whose inputs the weight fix needs (``Σ x xᵀ``, collected by the backend while scoring)."""
        if self.config["parameters"]["weight_fix"] == "none":
            return []
        return sorted({s.layer for cu, _ in self.unit_sets() for s in cu.coupling.slices
                       if s.axis == "in" and len(cu.shapes[s.layer]) == 2})

    # ---- 1. Fisher scores --------------------------------------------------------------------------
    def update_scores(self) -> None:
        wg: Dict[str, np.ndarray] = {}
        for name in self.modules:
            grad = self._grad(name)
            if grad is not None:
                wg[name] = self._to_canonical(name, self._weight(name)) * self._to_canonical(name, grad)
        for cu, readers in self.unit_sets():
            missing = [s.layer for s in readers if s.layer not in wg]
            if missing:
                self._no_grad.setdefault(cu.coupling.name, missing[0])
            else:
                self._grads.setdefault(cu.coupling.name, []).append(cu.reduce(wg, "sum", None, readers))

    def unit_fisher(self) -> Dict[str, np.ndarray]:
        """``{unit set: Σ_b g_b²}`` per unit."""
        return {name: (np.stack(g) ** 2).sum(axis=0) for name, g in self._grads.items()}

    def current_scores(self) -> Dict[str, np.ndarray]:
        fisher = self.unit_fisher()
        out: Dict[str, np.ndarray] = {}
        for cu, _ in self.unit_sets():
            if cu.coupling.name not in fisher:
                name = self._no_grad.get(cu.coupling.name, cu.layers[0])
                raise PruningStateError(f"pruning_type='retrain_free' scores units by their mask gradients, but layer "
                                        f"{name!r} had no gradient in any batch: {self._missing_grad_hint(name)}")
            for layer, a in cu.spread(fisher[cu.coupling.name]).items():
                out[layer] = out[layer] + a if layer in out else a
        for name in self.modules:
            out.setdefault(name, np.zeros(self._to_canonical(name, self._weight(name)).shape))
        return out

    # ---- 2. rearrangement, per unit set ---------------------------------------------------------
    def compute_new_masks(self, step: int) -> Dict[str, np.ndarray]:
        pre = {name: self._get_mask(name) for name in self.modules}
        masks = super().compute_new_masks(step)
        new = {n: np.ones_like(m, dtype=bool) for n, m in masks.items()}
        touched = set()
        for cu, _ in self.unit_sets():
            grads = self._grads.get(cu.coupling.name)
            layers = {l: masks[l] for l in cu.layers}
            chosen = cu.already_pruned(layers)
            if grads:
                chosen = rearrange(np.stack(grads), chosen, cu.already_pruned({l: pre[l] for l in cu.layers}))
            for layer, prune in cu.expand(chosen).items():
                new[layer] &= ~prune
                touched.add(layer)
        return {n: (new[n] & pre[n]) if n in touched else masks[n] for n in masks}

    # ---- 3. weight fix ------------------------------------------------------------------------
    def update_masks(self, step: int) -> None:
        fixed = {n: np.array(self._to_canonical(n, self._weight(n))) for n in self.input_stats}  # unpruned copies
        super().update_masks(step)
        if not self.input_stats:
            return
        self.fixes = {}
        for cu, _ in self.unit_sets():
            kept = ~cu.already_pruned({l: self._get_mask(l) for l in cu.layers})
            for s in cu.coupling.slices:
                if s.axis != "in" or s.layer not in self.input_stats or kept.all():
                    continue
                w = fixed[s.layer]  # couplings with slices of one layer (a KV group's query heads) take turns
                scales, before, after = least_squares_scales(
                    w, arrays.to_numpy(self.input_stats[s.layer].xtx), s, cu.n_units, kept,
                    self.config["parameters"]["dampening_frac"])
                for u, scale in zip(np.flatnonzero(kept), scales):
                    lo = s.offset + u * s.width
                    w[:, lo:lo + s.width] *= scale
                self._write_weight(s.layer, arrays.like(w, self._canonical_weight(s.layer)))
                self.fixes[f"{s.layer} ({cu.coupling.name})"] = {
                    "units_kept": int(kept.sum()), "error_before": before, "error_after": after}
        self._apply_masks()
        self.input_stats = {}
