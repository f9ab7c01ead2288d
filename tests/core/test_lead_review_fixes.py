"""Errors found in review: group lasso with N:M at config time; a criterion-less pruner's message."""

import numpy as np
import pytest

from nc_prune import BasePruner, ConfigError, PruningSession, WeightPruningConfig, register_pruner, PRUNERS
from nc_prune.core.layers import LayerInfo


def test_group_lasso_with_n_m_is_rejected_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"reg_type='group_lasso' needs a block pattern.*'2:4'"):
        WeightPruningConfig(pattern="2:4", target_sparsity=0.5, reg_type="group_lasso")


class NumpyGlue(BasePruner):
    def _weight(self, name):
        return self.modules[name]

    def _get_mask(self, name):
        return self.masks.setdefault(name, np.ones(self.modules[name].shape, dtype=bool))

    def _set_mask(self, name, keep):
        self.masks[name] = keep

    def _to_canonical(self, name, value):
        return np.asarray(value)

    def _apply_masks(self):
        for name, w in self.modules.items():
            w *= self._get_mask(name)


def test_a_pruner_without_criterion_says_what_to_implement():
    @register_pruner("no_scores")
    class NoScores(BasePruner):
        pass

    try:
        weights = {"fc": np.ones((8, 8))}
        session = PruningSession(WeightPruningConfig(pruning_type="no_scores", pattern="1x1"),
                                 [LayerInfo("fc", ("Linear",), (8, 8))], lambda plan: weights, NumpyGlue)
        with pytest.raises(NotImplementedError, match="NoScores has no criterion.*must fill self.scores"):
            session.on_before_optimizer_step()
    finally:
        PRUNERS.unregister("no_scores")


def test_min_bounds_above_the_target_warn_like_max_bounds_do():
    import nc_prune

    scores = {"a": np.arange(64.0).reshape(8, 8), "b": np.arange(64.0).reshape(8, 8) + 100}
    with pytest.warns(UserWarning, match=r"asks for 12 pruned units but min_sparsity_ratio_per_op=0.5 needs "
                                         r"at least 64; pruning 64"):
        masks = nc_prune.compute_masks(scores, "1x1", 0.1, min_sparsity_ratio_per_op=0.5)
    assert {n: int((~m).sum()) for n, m in masks.items()} == {"a": 32, "b": 32}
