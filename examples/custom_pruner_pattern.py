"""Your own pattern and pruner, registered by decorator, running unchanged in PyTorch and Keras.

    python examples/custom_pruner_pattern.py [--quick]

* ``"kernel"`` — a pattern that prunes whole convolution kernels: the ``kh x kw`` weights joining one
  input channel to one output channel (finer than a filter or a channel, coarser than a weight).
* ``"lamp"`` — a pruner scoring weights by LAMP (Lee et al., 2021, "Layer-adaptive sparsity for the
  magnitude-based pruning"): ``w² / (sum of w'² over the weights of the same layer with |w'| >= |w|)``.
  Scores are comparable across layers, so global ranking no longer strips the layer whose weights
  happen to be small.

Both are written against the numpy-only core, so neither has a line of torch or Keras: the backends
mix their glue into whatever class the registry returns. The script prunes the same weights in both
frameworks and checks that the masks are identical.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

import numpy as np

from nc_prune import (BasePruner, LayerUnits, Pattern, WeightPruningConfig, compute_masks, register_pattern,
                      register_pruner)
from nc_prune.core.arrays import from_2d, to_2d
from nc_prune.core.errors import PatternShapeError
from nc_prune.core.patterns.base import REDUCERS


class KernelUnits(LayerUnits):
    """Units of a conv weight ``(O, I, *k)``: one per ``(o, i)`` pair, covering its ``prod(k)`` positions.

    In the canonical 2-D view ``(O, prod(k) * I)`` (input channel fastest) a unit is the columns
    ``i, i + I, i + 2I, ...`` of row ``o``.
    """

    def __init__(self, shape: Tuple[int, ...]) -> None:
        self.shape = shape
        self.out, self.inp = shape[0], shape[1]
        self.positions = int(np.prod(shape[2:]))
        self.n_units = self.out * self.inp
        self.unit_size = self.positions

    def _view(self, a: np.ndarray) -> np.ndarray:
        return to_2d(np.asarray(a)).reshape(self.out, self.positions, self.inp)

    def reduce(self, score, reduce_type, keep):
        return REDUCERS[reduce_type](self._view(score), axis=1).reshape(-1)

    def already_pruned(self, keep):
        return ~self._view(keep).any(axis=1).reshape(-1)

    def expand(self, prune_units):
        units = prune_units.reshape(self.out, 1, self.inp)
        full = np.broadcast_to(units, (self.out, self.positions, self.inp)).reshape(self.out, -1)
        return from_2d(full, self.shape).copy()

    def block_size(self) -> List[int]:
        return [1, self.positions]


@register_pattern("kernel")
class KernelPattern(Pattern):
    """Whole ``kh x kw`` kernels of convolutions; Linear layers do not fit (they stay dense, with a warning)."""

    def units(self, name, shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) < 3:
            raise PatternShapeError(f"layer {name!r} with weight shape {shape} has no kernel: pattern 'kernel' "
                                    f"prunes convolutions; select them with pruning_op_types=['Conv']")
        return KernelUnits(shape)


def lamp_scores(weight: np.ndarray) -> np.ndarray:
    """LAMP score of every weight of one layer (any shape)."""
    sq = np.square(weight.astype(np.float64)).reshape(-1)
    order = np.argsort(sq, kind="stable")  # ascending
    tail = np.cumsum(sq[order][::-1])[::-1]  # sum over the weights at least as large
    scores = np.empty_like(sq)
    scores[order] = sq[order] / np.maximum(tail, np.finfo(np.float64).tiny)
    return scores.reshape(weight.shape)


@register_pruner("lamp")
class LampPruner(BasePruner):
    """Masks from LAMP scores, on the usual schedule. Framework-free: it reads weights through the glue."""

    def current_scores(self) -> Dict[str, np.ndarray]:
        return {name: lamp_scores(self._to_canonical(name, self._weight(name))) for name in self.modules}


def config(start_step: int, end_step: int) -> WeightPruningConfig:
    return WeightPruningConfig(
        [{"op_names": ["conv"], "pattern": "kernel", "pruning_type": "magnitude", "target_sparsity": 0.5},
         {"op_names": ["fc"], "pattern": "4x1", "pruning_type": "lamp", "target_sparsity": 0.8}],
        start_step=start_step, end_step=end_step, pruning_frequency=max(1, (end_step - start_step) // 4) or 1)


def torch_masks(weights: Dict[str, np.ndarray], steps: int):
    """Prune a torch model holding ``weights`` (lr 0, so the weights do not move); its canonical masks."""
    import torch
    from torch import nn
    from nc_prune.torch import prepare_pruning

    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 8, 3))
    model.add_module("conv2", nn.Conv2d(8, 16, 3))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc1", nn.Linear(16 * 2 * 2, 32))
    model.add_module("fc2", nn.Linear(32, 32))
    model.add_module("head", nn.Linear(32, 10))
    with torch.no_grad():
        for name, w in weights.items():
            model.get_submodule(name).weight.copy_(torch.from_numpy(w))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    pruning = prepare_pruning(model, config(0, steps), opt)
    for _ in range(steps + 1):
        opt.zero_grad()
        model(torch.randn(2, 3, 6, 6)).sum().backward()
        opt.step()
    print(pruning.report())
    return {name: m.numpy() for name, m in pruning.masks.items()}


def keras_masks(weights: Dict[str, np.ndarray], steps: int):
    """The same in Keras 3 (kernels in Keras' own layout), through ``model.fit`` and the callback."""
    import keras
    from nc_prune.keras import find_prunable_weights, prepare_pruning

    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(8, 3, name="conv1"), L.Conv2D(16, 3, name="conv2"),
                              L.Flatten(), L.Dense(32, name="fc1"), L.Dense(32, name="fc2"),
                              L.Dense(10, name="head")])
    handles = {w.name: w for w in find_prunable_weights(model)}
    for name, w in weights.items():
        handles[name].variable.assign(handles[name].layout.from_canonical(w, handles[name].native_shape))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    callback = prepare_pruning(model, config(0, steps))
    model.fit(np.zeros((steps + 1, 6, 6, 3), "float32"), np.zeros((steps + 1, 10), "float32"), batch_size=1,
              verbose=0, callbacks=[callback])
    print(callback.report())
    return {name: handles[name].layout.to_canonical(keras.ops.convert_to_numpy(handles[name].variable)) != 0
            for name in weights}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pruning steps")
    parser.add_argument("--no-keras", action="store_true", help="PyTorch only")
    args = parser.parse_args(argv)
    steps = 4 if args.quick else 8
    rng = np.random.default_rng(0)
    # canonical (out, in, *kernel) weights; fc2 is ten times smaller, which LAMP compensates for
    weights = {"conv1": rng.normal(size=(8, 3, 3, 3)), "conv2": rng.normal(size=(16, 8, 3, 3)),
               "fc1": rng.normal(size=(32, 64)), "fc2": 0.1 * rng.normal(size=(32, 32))}
    weights = {k: v.astype(np.float32) for k, v in weights.items()}

    masks = torch_masks(weights, steps)
    kernels = masks["conv2"].reshape(16, 8, 9)
    assert (kernels.all(axis=2) | ~kernels.any(axis=2)).all()  # whole kernels only
    assert (~kernels.any(axis=2)).sum() + (~masks["conv1"].reshape(8, 3, 9).any(axis=2)).sum() == 0.5 * (128 + 24)
    fc = {n: 1 - masks[n].mean() for n in ("fc1", "fc2")}
    plain = compute_masks({n: np.abs(weights[n]) for n in ("fc1", "fc2")}, "4x1", 0.8)  # magnitude, global
    print(f"LAMP pruned fc1 {fc['fc1']:.1%} and fc2 {fc['fc2']:.1%}; plain magnitude would prune fc1 "
          f"{1 - plain['fc1'].mean():.1%} and fc2 {1 - plain['fc2'].mean():.1%} (its weights are 10x smaller)")
    assert fc["fc2"] < 1 - plain["fc2"].mean()

    if not args.no_keras:
        try:
            import nc_prune.keras  # noqa: F401
        except ImportError as exc:
            print(f"Keras part skipped: {exc}")
            return masks
        same = keras_masks(weights, steps)
        for name in weights:
            assert np.array_equal(same[name], masks[name]), name
        print("Keras: the same masks, bit for bit")
    return masks


if __name__ == "__main__":
    main()
