"""Same numbers → same masks, Keras and torch: a Keras Dense kernel K and a torch Linear weight K.T, a Keras
Conv2D kernel (kh, kw, in, out) and a torch Conv2d weight (out, in, kh, kw), get identical masks for every
pattern, in global and local scope — through the Keras backend, through the core on numpy and on torch
tensors, and through the torch backend."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from nc_prune import WeightPruningConfig, compute_masks  # noqa: E402
from nc_prune.keras import prepare_pruning  # noqa: E402

PATTERNS = ["4x1", "1x1", "2x2", "1xchannel", "channelx1", "2:4", "1:4"]
LAYERS = ["c1", "c2", "fc1", "fc2"]  # "head" is the classifier, left dense by both backends
L = keras.layers


def keras_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, name="c1")(inp)
    x = L.Conv2D(8, 3, name="c2")(x)
    x = L.Dense(32, name="fc1")(L.Flatten()(x))
    x = L.Dense(32, name="fc2")(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


class TorchTwin(torch.nn.Module):
    """The torch model holding the same numbers in torch's layout."""

    def __init__(self, km):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(4, 8, 3), torch.nn.Conv2d(8, 8, 3)
        self.fc1, self.fc2, self.head = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4)
        with torch.no_grad():
            for name in ("c1", "c2"):
                self._modules[name].weight.copy_(torch_layout(km.get_layer(name).kernel.numpy()))
                self._modules[name].bias.copy_(torch.from_numpy(km.get_layer(name).bias.numpy()))
            for name in ("fc1", "fc2", "head"):
                k = km.get_layer(name).kernel.numpy()
                if name == "fc1":  # Keras flattens (h, w, c); torch flattens (c, h, w)
                    k = k.reshape(2, 2, 8, 32).transpose(2, 0, 1, 3).reshape(32, 32)
                self._modules[name].weight.copy_(torch_layout(k))
                self._modules[name].bias.copy_(torch.from_numpy(km.get_layer(name).bias.numpy()))

    def forward(self, x):
        x = self.c2(self.c1(x)).flatten(1)
        return self.head(self.fc2(self.fc1(x)))


def torch_layout(kernel: np.ndarray) -> torch.Tensor:
    """Keras Dense (in, out) → Linear (out, in); Conv2D (kh, kw, in, out) → Conv2d (out, in, kh, kw)."""
    a = kernel.T if kernel.ndim == 2 else kernel.transpose(3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def keras_masks(pattern, scope, target):
    model = keras_model()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    cb = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern=pattern, target_sparsity=target,
                                                    pruning_scope=scope, start_step=0, end_step=0))
    cb.on_train_begin()
    cb.on_train_batch_begin(0)  # the core's step 0, without training
    return model, {n: torch_layout(cb.optimizer.slots[n].mask.numpy()) for n in LAYERS}


def _target(pattern):
    return 0.25 if pattern == "1:4" else 0.5


def test_the_torch_twin_computes_the_same_function():
    km = keras_model()
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(TorchTwin(km)(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy(),
                               np.asarray(km(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_keras_masks_equal_core_masks_on_torch_and_numpy_weights(pattern, scope):
    target = _target(pattern)
    km, got = keras_masks(pattern, scope, target)
    # core on torch tensors in torch's layout (fc1 in Keras's input order: the same numbers, same positions)
    weights = {n: torch_layout(km.get_layer(n).kernel.numpy()) for n in LAYERS}
    on_torch = compute_masks({n: w.abs() for n, w in weights.items()}, pattern, target, scope)
    on_numpy = compute_masks({n: np.abs(w.numpy()) for n, w in weights.items()}, pattern, target, scope)
    for n in LAYERS:
        assert got[n].dtype == torch.bool and on_torch[n].dtype == torch.bool
        assert torch.equal(got[n], on_torch[n]), (pattern, scope, n)
        np.testing.assert_array_equal(got[n].numpy(), on_numpy[n])
    kept = sum(int(m.sum()) for m in got.values())
    assert 0 < kept < sum(m.numel() for m in got.values())


@pytest.mark.parametrize("pattern", ["4x1", "2:4", "1xchannel"])
def test_dense_kernel_and_linear_weight_alone(pattern):
    rng = np.random.default_rng(3)
    k = rng.normal(size=(16, 8)).astype("float32")  # Keras Dense: 16 inputs, 8 outputs
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, name="fc"), L.Dense(2, name="head")])
    model.get_layer("fc").kernel.assign(k)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    cb = prepare_pruning(model, WeightPruningConfig(pruning_type="magnitude", pattern=pattern, target_sparsity=0.5))
    cb.on_train_begin()
    cb.on_train_batch_begin(0)
    linear = torch.nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(k.T.copy()))
    want = compute_masks({"fc": linear.weight.detach().abs()}, pattern, 0.5)["fc"]
    assert torch.equal(torch.from_numpy(cb.optimizer.slots["fc"].mask.numpy().T.copy()), want)


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_torch_backend_prunes_the_twin_identically(pattern, scope):
    nt = pytest.importorskip("nc_prune.torch")
    target = _target(pattern)
    km, got = keras_masks(pattern, scope, target)
    twin = torch.nn.Sequential()  # same numbers as keras, fc1 kept in Keras's input order
    for n in LAYERS + ["head"]:
        k = km.get_layer(n).kernel.numpy()
        mod = torch.nn.Linear(k.shape[0], k.shape[1]) if k.ndim == 2 else torch.nn.Conv2d(k.shape[2], k.shape[3], 3)
        with torch.no_grad():
            mod.weight.copy_(torch_layout(k))
        twin.add_module(n, mod)
    opt = torch.optim.SGD(twin.parameters(), lr=0.0)
    nt.prepare_pruning(twin, WeightPruningConfig(pruning_type="magnitude", pattern=pattern, target_sparsity=target,
                                                 pruning_scope=scope, start_step=0, end_step=0), opt)
    opt.step()
    for n in LAYERS:
        assert torch.equal(twin._modules[n].weight.detach() != 0, got[n]), (pattern, scope, n)
