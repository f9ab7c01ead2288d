"""One-shot pruning of Keras models (``prepare_pruning(model, config, dataloader=...)`` / ``prune_once``).

Exact counts per row and per N:M group; the same masks as the torch one-shot pipeline on the same weights and
calibration data (and SparseGPT's updated weights within float tolerance); the model left unchanged but for
its pruned kernels; bad input refused naming the fix. Runs under every Keras backend (the last test runs this
file under JAX and torch from the TensorFlow process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from nc_prune import WeightPruningConfig  # noqa: E402
from nc_prune.core.errors import ConfigError, PruningStateError  # noqa: E402
from nc_prune.keras import OneShotPruning, find_prunable_weights, prepare_pruning, prune_once  # noqa: E402

L = keras.layers
ROOT = Path(__file__).resolve().parents[2]
#: SparseGPT's updated weights, Keras (numpy maths, backend forward passes) vs torch (torch maths and forward):
#: the largest difference seen is 9.2e-6 (EinsumDense), 1.6e-6 for Dense (float32 rounding of the forward passes,
#: the Hessian and the column updates); the masks are equal exactly.
SPARSEGPT_ATOL = 5e-5


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)
    yield


def calib(n=64, features=16, seed=1):
    return np.random.default_rng(seed).normal(size=(n, features)).astype("float32")


def mlp():
    return keras.Sequential([keras.Input((16,)), L.Dense(32, activation="relu", name="fc1"),
                             L.Dense(32, activation="relu", name="fc2"), L.Dense(4, name="head")], name="mlp")


def functional_chain():
    inp = keras.Input((16,))
    x = L.Dense(32, activation="relu", name="fc1")(inp)
    x = L.Dense(32, activation="relu", name="fc2")(x)
    return keras.Model(inp, L.Dense(4, name="head")(x), name="chain")


def functional_residual():
    inp = keras.Input((16,))
    x = L.Dense(32, activation="relu", name="fc1")(inp)
    y = L.Dense(32, name="fc2")(x)
    x = L.Add()([x, L.Activation("relu")(y)])
    return keras.Model(inp, L.Dense(4, name="head")(x), name="residual")


@keras.saving.register_keras_serializable("test_oneshot")
class Block(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.up = L.Dense(32, name="up")
        self.down = L.Dense(16, name="down")

    def call(self, x):
        return x + self.down(keras.ops.relu(self.up(x)))


@keras.saving.register_keras_serializable("test_oneshot")
class Net(keras.Model):
    """Subclassed: an input projection, a list of two residual blocks, a head."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.inp = L.Dense(16, name="inp")
        self.blocks = [Block(name=f"b{i}") for i in range(2)]
        self.head = L.Dense(4, name="head")

    def call(self, x):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def subclassed():
    model = Net()
    model(np.zeros((1, 16), "float32"))
    return model


def canonical(model):
    return {w.name: w.layout.to_canonical(np.asarray(keras.ops.convert_to_numpy(w.variable)))
            for w in find_prunable_weights(model)}


def cfg(kind, pattern="1x1", target=0.5, **kw):
    return WeightPruningConfig(pruning_type=kind, pattern=pattern, target_sparsity=target, **kw)


# ---- exact counts ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [mlp, functional_chain, functional_residual, subclassed])
def test_wanda_1x1_prunes_exactly_floor_in_times_target_of_every_row(build):
    model = build()
    pruning = prepare_pruning(model, cfg("wanda", target=0.6), dataloader=calib())
    assert isinstance(pruning, OneShotPruning)
    pruned = {n: w for n, w in canonical(model).items() if n != "head"}
    for name, w in pruned.items():
        per_row = (w == 0).sum(axis=1)
        assert (per_row == int(w.shape[1] * 0.6)).all(), (name, per_row)  # 16 in: 9 per row; 32 in: 19
    assert (canonical(model)["head"] != 0).all()
    assert sorted(pruning.calibration.layers) == sorted(pruned)


@pytest.mark.parametrize("build", [mlp, functional_chain, subclassed])
@pytest.mark.parametrize("kind", ["wanda", "sparse_gpt", "magnitude"])
@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8)])
def test_n_m_prunes_exactly_n_of_every_group_of_m(build, kind, nm):
    n, m = nm
    model = build()
    pruning = prepare_pruning(model, cfg(kind, f"{n}:{m}", n / m), dataloader=calib())
    for name, w in canonical(model).items():
        if name == "head":
            continue
        groups = (w == 0).reshape(w.shape[0], -1, m).sum(-1)
        assert (groups == n).all(), (name, np.unique(groups))
        assert pruning.report()[name].zeros == w.size * n // m


def test_sparse_gpt_1x1_block_selection_prunes_floor_of_the_layer_and_row_selection_each_row():
    model = mlp()
    prune_once(model, cfg("sparse_gpt", target=0.6), calib())
    w = canonical(model)
    assert (w["fc1"] == 0).sum() == 307 and (w["fc2"] == 0).sum() == 614   # floor(512·0.6), floor(1024·0.6)
    model = mlp()
    prune_once(model, cfg("sparse_gpt", target=0.6, parameters={"mask_selection": "row"}), calib())
    w = canonical(model)
    assert ((w["fc1"] == 0).sum(1) == 9).all() and ((w["fc2"] == 0).sum(1) == 19).all()


def test_magnitude_4x1_global_prunes_exactly_half_of_the_blocks_without_data():
    model = mlp()
    pruning = prune_once(model, cfg("magnitude", "4x1", 0.5))
    w = canonical(model)
    blocks = [(w[n] == 0).reshape(w[n].shape[0] // 4, 4, -1).all(1) for n in ("fc1", "fc2")]
    partial = [((w[n] == 0).reshape(w[n].shape[0] // 4, 4, -1).sum(1) % 4 != 0).sum() for n in ("fc1", "fc2")]
    assert sum(int(b.sum()) for b in blocks) == 192 and partial == [0, 0]  # of (512 + 1024) / 4 = 384 blocks
    assert pruning.calibration is None
    assert str(pruning.report()).splitlines()[-1].split()[2] == "768"


def test_multi_head_attention_projections_are_pruned_through_their_einsum_inputs():
    inp = keras.Input((6, 16))
    x = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(inp, inp)
    x = L.Dense(16, name="proj")(x)
    model = keras.Model(inp, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(x)))
    data = np.random.default_rng(0).normal(size=(16, 6, 16)).astype("float32")
    pruning = prune_once(model, cfg("sparse_gpt", "2:4", 0.5), data, batch_size=8)
    w = canonical(model)
    names = ["mha/query", "mha/key", "mha/value", "mha/attention_output", "proj"]
    for name in names:
        assert ((w[name] == 0).reshape(w[name].shape[0], -1, 4).sum(-1) == 2).all(), name
    assert sorted(pruning.calibration.layers) == sorted(names)
    assert pruning.calibration.tokens == 16 * 6


# ---- the same masks as torch ----------------------------------------------------------------------------
torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    return torch


def _torch_linear(w_canonical, bias):
    lin = torch.nn.Linear(w_canonical.shape[1], w_canonical.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w_canonical)))
        lin.bias.copy_(torch.from_numpy(np.asarray(bias)))
    return lin


def _bias(layer):
    return np.asarray(keras.ops.convert_to_numpy(layer.bias))


def torch_mlp(model):
    w = canonical(model)
    fc1, fc2, head = (model.get_layer(n) for n in ("fc1", "fc2", "head"))
    return torch.nn.Sequential(_torch_linear(w["fc1"], _bias(fc1)), torch.nn.ReLU(),
                               _torch_linear(w["fc2"], _bias(fc2)), torch.nn.ReLU(),
                               _torch_linear(w["head"], _bias(head))), {"fc1": "0", "fc2": "2", "head": "4"}


def torch_net(model):
    nn = torch.nn
    w = canonical(model)

    class TBlock(nn.Module):
        def __init__(self, block, i):
            super().__init__()
            self.up = _torch_linear(w[f"b{i}/up"], _bias(block.up))
            self.down = _torch_linear(w[f"b{i}/down"], _bias(block.down))

        def forward(self, x):
            return x + self.down(torch.relu(self.up(x)))

    class TNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = _torch_linear(w["inp"], _bias(model.inp))
            self.blocks = nn.ModuleList([TBlock(b, i) for i, b in enumerate(model.blocks)])
            self.head = _torch_linear(w["head"], _bias(model.head))

        def forward(self, x):
            x = self.inp(x)
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    names = {"inp": "inp", "head": "head"}
    names.update({f"b{i}/{p}": f"blocks.{i}.{p}" for i in range(2) for p in ("up", "down")})
    return TNet(), names


def einsum_model():
    """EinsumDense 'abc,cde->abde' then 'abcd,cde->abe' — torch: two Linear layers on the flattened axes."""
    inp = keras.Input((5, 16))
    x = L.EinsumDense("abc,cde->abde", output_shape=(5, 4, 8), bias_axes="de", name="e1")(inp)
    x = L.EinsumDense("abcd,cde->abe", output_shape=(5, 16), bias_axes="e", name="e2")(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def torch_einsum(model):
    w = canonical(model)
    e1, e2, head = (model.get_layer(n) for n in ("e1", "e2", "head"))
    return torch.nn.Sequential(_torch_linear(w["e1"], _bias(e1).reshape(-1)), _torch_linear(w["e2"], _bias(e2)),
                               _torch_linear(w["head"], _bias(head))), {"e1": "0", "e2": "1", "head": "2"}


CASES = {"sequential": (mlp, torch_mlp, (16,)), "functional": (functional_chain, torch_mlp, (16,)),
         "subclassed": (subclassed, torch_net, (16,)), "einsum": (einsum_model, torch_einsum, (5, 16))}
CONFIGS = [("magnitude", "1x1", 0.5, {}), ("wanda", "1x1", 0.5, {}), ("wanda", "2:4", 0.5, {}),
           ("sparse_gpt", "1x1", 0.5, {}), ("sparse_gpt", "2:4", 0.5, {}),
           ("sparse_gpt", "1x1", 0.6, {"mask_selection": "row", "block_size": 8}),
           ("wanda", "1x1", 0.5, {"sparsity_allocation": "owl", "owl_lambda": 0.1})]


#: OWL spreads the target over repeated blocks: only the subclassed model has them.
PARAMS = [(case,) + c for case in sorted(CASES) for c in CONFIGS
          if case == "subclassed" or c[3].get("sparsity_allocation") != "owl"]


@pytest.mark.parametrize("case,kind,pattern,target,params", PARAMS,
                         ids=[f"{p[0]}-{p[1]}-{p[2]}-{p[3]}{'-' + '-'.join(p[4]) if p[4] else ''}" for p in PARAMS])
def test_the_same_weights_and_data_give_torch_s_masks_and_sparse_gpt_weights(case, kind, pattern, target, params):
    _torch()
    from nc_prune.torch import prepare_pruning as torch_prepare_pruning

    build, to_torch, shape = CASES[case]
    model = build()
    tmodel, names = to_torch(model)
    data = np.random.default_rng(3).normal(size=(48,) + shape).astype("float32")
    config = cfg(kind, pattern, target, parameters=params)
    pruning = prepare_pruning(model, config, dataloader=data, batch_size=16)
    tpruning = torch_prepare_pruning(tmodel, config, dataloader=[torch.from_numpy(data[i:i + 16])
                                                                  for i in range(0, 48, 16)])
    tmasks = {n: m.detach().numpy().astype(bool) for n, m in tpruning.masks.items()}
    assert sorted(tmasks) == sorted(names[n] for n in pruning.masks)
    for name, keep in pruning.masks.items():
        np.testing.assert_array_equal(keep, tmasks[names[name]], err_msg=name)
        assert not keep.all()
    got = canonical(model)
    for name, tname in names.items():
        want = dict(tmodel.named_parameters())[f"{tname}.weight"].detach().numpy()
        if kind == "sparse_gpt":
            np.testing.assert_allclose(got[name], want, rtol=0, atol=SPARSEGPT_ATOL, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want, err_msg=name)
    if pruning.calibration is not None:
        assert pruning.calibration.sparsity == tpruning.calibration.sparsity
        assert pruning.calibration.tokens == 48 * int(np.prod(shape[:-1]))


# ---- the model is left as it was ----------------------------------------------------------------------------
def _structure(model):
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return {
        "layers": [(type(l).__name__, l.name, sorted(l.__dict__), len(getattr(l, "_inbound_nodes", [])),
                    "call" in l.__dict__) for l in layers],
        "variables": [(v.path, tuple(v.shape), str(v.dtype), v.trainable) for v in model.variables],
        "config": model.get_config() if not isinstance(model, Net) else None,
    }


@pytest.mark.parametrize("build", [mlp, functional_residual, subclassed])
@pytest.mark.parametrize("kind", ["wanda", "sparse_gpt"])
def test_only_the_pruned_kernels_change(build, kind):
    model = build()
    before = _structure(model)
    values = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.variables}
    targets = {w.variable.path for w in find_prunable_weights(model) if w.name != "head"}
    pruning = prepare_pruning(model, cfg(kind, "2:4", 0.5), dataloader=calib())
    assert _structure(model) == before
    for v in model.variables:
        now = np.asarray(keras.ops.convert_to_numpy(v))
        if v.path in targets:
            assert (now == 0).sum() == now.size // 2
            if kind == "wanda":  # kept weights untouched
                np.testing.assert_array_equal(now[now != 0], values[v.path][now != 0])
        else:
            np.testing.assert_array_equal(now, values[v.path], err_msg=v.path)
    assert pruning.strip() is model
    model.compile("sgd", "mse")  # still an ordinary Keras model: compiles, trains, predicts
    model.fit(calib(16), np.zeros((16, 4), "float32"), epochs=1, verbose=0)
    assert model.predict(calib(4), verbose=0).shape == (4, 4)


def test_calibration_data_as_arrays_dataset_and_batches_give_the_same_masks():
    tf = pytest.importorskip("tensorflow")
    x = calib(64)
    y = np.zeros((64, 4), "float32")
    sources = {"array": x, "x_y": (x, y), "list": [x[:32], x[32:]], "pairs": [(x[:32], y[:32]), (x[32:], y[32:])],
               "generator": (b for b in (x[:32], x[32:])),
               "tf.data": tf.data.Dataset.from_tensor_slices((x, y)).batch(32)}
    masks = {}
    for name, data in sources.items():
        keras.utils.set_random_seed(0)
        model = mlp()
        pruning = prune_once(model, cfg("sparse_gpt", "2:4", 0.5), data)
        assert pruning.calibration.batches == 2 and pruning.calibration.tokens == 64, name
        masks[name] = pruning.masks
    for name, m in masks.items():
        for layer in m:
            np.testing.assert_array_equal(m[layer], masks["array"][layer], err_msg=f"{name}: {layer}")


def test_blocks_are_found_or_named_and_the_report_says_how_the_model_ran():
    pruning = prune_once(subclassed(), cfg("wanda"), calib())
    assert pruning.calibration.blocks == ("blocks", 2)
    assert "2 blocks of blocks" in str(pruning.calibration)
    assert prune_once(mlp(), cfg("wanda"), calib()).calibration.blocks == ("", 3)   # a Sequential's layers
    residual = prune_once(functional_residual(), cfg("wanda"), calib()).calibration
    assert residual.blocks == (None, 0) and "layer by layer" in str(residual)
    assert prune_once(subclassed(), cfg("wanda"), calib(), blocks="blocks").calibration.blocks == ("blocks", 2)
    with pytest.raises(ConfigError, match="blocks='nope' names nothing"):
        prune_once(subclassed(), cfg("wanda"), calib(), blocks="nope")


# ---- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_naming_the_fix_before_any_weight_changes():
    model = mlp()
    values = [np.array(v) for v in model.get_weights()]
    x = calib()
    with pytest.raises(ConfigError, match="pruning_type 'bogus' is not available; choose one of"):
        prepare_pruning(model, {"pruning_type": "bogus"}, dataloader=x)
    with pytest.raises(ConfigError, match=r"pattern '1x1' \(each output row to the target\) or N:M"):
        prepare_pruning(model, {"pruning_type": "sparse_gpt", "pattern": "4x1", "target_sparsity": 0.5}, dataloader=x)
    with pytest.raises(ConfigError, match="set target_sparsity=0.5"):
        prepare_pruning(model, {"pruning_type": "wanda", "pattern": "2:4", "target_sparsity": 0.4}, dataloader=x)
    with pytest.raises(ConfigError, match="gave no batch"):
        prepare_pruning(model, cfg("wanda"), dataloader=[])
    with pytest.raises(ConfigError, match="gave no batch"):
        prepare_pruning(model, cfg("wanda"), dataloader=np.zeros((0, 16), "float32"))
    with pytest.raises(ConfigError, match="pass dataloader="):
        prune_once(model, cfg("sparse_gpt"))
    with pytest.raises(ConfigError, match=r"rejected a calibration batch of structure float32\[8, 5\]"):
        prepare_pruning(model, cfg("wanda"), dataloader=[np.zeros((8, 5), "float32")])
    with pytest.raises(ConfigError, match="scores weights by their gradients.*'magnitude', 'wanda' or 'sparse_gpt'"):
        prepare_pruning(model, cfg("snip_momentum", "4x1"), dataloader=x)
    with pytest.raises(ConfigError, match="an optimizer .* or a dataloader .* not both"):
        prepare_pruning(model, cfg("wanda"), keras.optimizers.SGD(), dataloader=x)
    for got, want in zip(model.get_weights(), values):
        np.testing.assert_array_equal(got, want)

    unbuilt = keras.Sequential([L.Dense(4), L.Dense(2)])
    with pytest.raises(PruningStateError, match=r"call it once on a batch \(model\(x\)\)"):
        prepare_pruning(unbuilt, cfg("wanda"), dataloader=x)

    conv = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(8, 3, name="conv"), L.Flatten(), L.Dense(8, name="fc"),
                             L.Dense(2, name="head")])
    with pytest.raises(ConfigError, match="'conv' is a Conv2D .*Dense and EinsumDense.*excluded_op_names"):
        prepare_pruning(conv, cfg("sparse_gpt"), dataloader=np.zeros((4, 6, 6, 3), "float32"))
    pruning = prepare_pruning(conv, cfg("sparse_gpt", excluded_op_names=["conv"]),
                              dataloader=np.random.rand(8, 6, 6, 3).astype("float32"))
    assert sorted(pruning.masks) == ["fc"]

    with pytest.raises(ConfigError, match=r"cannot prune during training.*prepare_pruning\(model, config, "
                                          r"dataloader=calibration_batches\)"):
        model.compile("sgd", "mse")
        prepare_pruning(model, cfg("wanda"))
    with pytest.raises(ConfigError, match="sparsity_allocation='owl'.*name them with blocks="):
        prune_once(functional_residual(), cfg("wanda", parameters={"sparsity_allocation": "owl"}), x)


def test_a_layer_the_model_never_calls_is_named():
    class Idle(keras.Model):
        def __init__(self):
            super().__init__()
            self.used = L.Dense(8, name="used")
            self.idle = L.Dense(8, name="idle")
            self.head = L.Dense(2, name="head")

        def call(self, x):
            return self.head(self.used(x))

    model = Idle()
    model(np.zeros((1, 16), "float32"))
    model.idle.build((None, 16))
    with pytest.raises(PruningStateError, match="layer 'idle' saw no calibration input"):
        prune_once(model, cfg("wanda"), calib())


# ---- every backend ------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="spawns the other backends; run once, from the TensorFlow process")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_this_file_passes_on(backend):
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", __file__],
                         capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.splitlines()[-1]


def test_docstring_examples():
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module("nc_prune.keras.oneshot"),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
