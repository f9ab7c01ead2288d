"""Bad input gets a clear exception naming what is wrong and the fix; nothing the user passed is mutated."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import nc_prune.keras as nk
from nc_prune.core.errors import ConfigError, ConfigTypeError, PruningStateError

from .conftest import L, compiled, config, data, fit, keras, mlp, prepare_pruning


def test_the_model_must_be_a_built_keras_model():
    with pytest.raises(ConfigTypeError, match="needs a Keras 3 keras.Model, got builtins.dict"):
        prepare_pruning({}, config())
    unbuilt = keras.Sequential([L.Dense(4), L.Dense(2)])
    with pytest.raises(PruningStateError, match=r"has no weights yet; call it once on a batch \(model\(x\)\)"):
        prepare_pruning(unbuilt, config())


def test_the_build_advice_works_for_a_subclassed_model_without_build():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc, self.head = L.Dense(8, name="fc"), L.Dense(2, name="head")

        def call(self, x):
            return self.head(self.fc(x))

    net = Net()
    with pytest.raises(PruningStateError) as info:
        prepare_pruning(net, config())
    assert "a subclassed model without a build() method only builds by being called" in str(info.value)
    net(np.ones((1, 4), "float32"))  # what the message says to do
    net.compile("sgd", "mse")
    cb = prepare_pruning(net, config(pattern="4x1", target_sparsity=0.5))
    assert list(cb.weights) == ["fc"]


def test_an_optimizer_is_needed():
    with pytest.raises(PruningStateError, match="not compiled.*pass optimizer="):
        prepare_pruning(mlp(), config())
    with pytest.raises(ConfigTypeError, match="needs a config"):
        prepare_pruning(compiled(mlp()))


def test_config_errors_come_from_the_shared_config_and_the_dict_is_not_mutated():
    cfg = {"pruning_configs": [{"op_names": ["fc1"], "pattern": "2:4"}], "target_sparsity": 0.5,
           "pruning_type": "magnitude"}
    before = copy.deepcopy(cfg)
    cb = prepare_pruning(compiled(mlp()), cfg)
    assert cfg == before and list(cb.weights) == ["fc1"]
    with pytest.raises(ConfigError, match="unknown key 'target_sparsty'.*did you mean 'target_sparsity'"):
        prepare_pruning(compiled(mlp()), {"target_sparsty": 0.5})


def test_recompiling_after_prepare_warns_and_keeps_pruning():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pattern="1x1", target_sparsity=0.5, start_step=0, end_step=0))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    with pytest.warns(UserWarning, match="compile\\(\\) was called after prepare_pruning"):
        fit(model, cb, *data((16,), n=16), batch_size=4)
    assert model.optimizer is cb.optimizer and type(cb.optimizer.inner_optimizer).__name__ == "Adam"
    zeros = sum(int((model.get_layer(n).kernel.numpy() == 0).sum()) for n in ("fc1", "fc2"))
    assert zeros == (16 * 32 + 32 * 32) // 2


def test_pruning_optimizer_arguments_are_checked():
    with pytest.raises(ConfigError, match="does not take \\['clipnorm'\\]; set them on the inner optimizer"):
        nk.PruningOptimizer("sgd", [], clipnorm=1.0)
    inner = nk.PruningOptimizer("sgd", [])
    with pytest.raises(ConfigError, match="cannot wrap another PruningOptimizer"):
        nk.PruningOptimizer(inner, [])
    with pytest.raises(ConfigError, match="distinct names"):
        nk.PruningOptimizer("sgd", [{"name": "a", "shape": [2, 2]}, {"name": "a", "shape": [2, 2]}])


def test_saved_state_that_does_not_fit_the_model_is_refused():
    model = mlp()
    opt = nk.PruningOptimizer("sgd", [{"name": "fc2", "shape": [16, 32], "index": 2}])
    with pytest.raises(PruningStateError, match=r"expects shape \(16, 32\) at trainable variable #2.*\(32, 32\)"):
        opt.build(model.trainable_variables)
    opt = nk.PruningOptimizer("sgd", [{"name": "fc2", "shape": [32, 32], "index": 9}])
    with pytest.raises(PruningStateError, match="#9, but the model has 6"):
        opt.build(model.trainable_variables)


def test_frozen_layer_passed_as_a_live_target_is_named():
    model = compiled(mlp())
    model.get_layer("fc1").trainable = False
    opt = nk.PruningOptimizer.for_variables("sgd", [{"name": "fc1", "shape": [16, 32]}],
                                            {"fc1": model.get_layer("fc1").kernel})
    with pytest.raises(PruningStateError, match="'fc1'.*not among the variables the optimizer updates"):
        opt.build(model.trainable_variables)


def test_gradient_criterion_without_any_collected_step_says_so():
    model = compiled(mlp())
    cb = prepare_pruning(model, config(pruning_type="snip", pattern="4x1", target_sparsity=0.5))
    cb.on_train_begin()
    pruner = cb.session.pruners[0]
    with pytest.raises(PruningStateError, match="scores weights by their gradients, but layer 'fc1' had no gradient "
                                                "at step 0: no training step has folded its gradient in yet"):
        pruner.current_scores()
    assert np.all(cb.weights["fc1"].slot.mask.numpy())


@pytest.mark.parametrize("ptype", ["sparse_gpt", "wanda"])
def test_one_shot_types_are_refused_by_the_training_time_callback(ptype):
    # before: accepted, and model.fit with the callback pruned 0 of 128 weights without a word
    model = compiled(mlp())
    with pytest.raises(ConfigError, match=rf"group 0 \(pruning_type='{ptype}'\) prunes a trained model at once .* "
                                          r"nc_prune\.keras\.prepare_pruning"):
        prepare_pruning(model, config(pruning_type=ptype, pattern="1x1", target_sparsity=0.5))
