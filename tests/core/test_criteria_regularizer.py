"""Criteria scores and the group-lasso regularizer on hand-computed numpy examples."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune.core.config import DEFAULTS
from nc_prune import CRITERIA, ConfigError, WeightPruningConfig, get_pattern
from nc_prune.core.pruner import BasicPruner
from nc_prune.core.regularizers import GroupLasso

W = np.array([[1.0, -2.0], [-3.0, 0.5]])
G = np.array([[0.5, 0.5], [-1.0, 4.0]])


def crit(name):
    return CRITERIA.get(name)({})


def test_magnitude():
    c = crit("magnitude")
    assert not c.needs_grad
    assert c.score(W, None, None).tolist() == [[1.0, 2.0], [3.0, 0.5]]


def test_gradient():
    c = crit("gradient")
    assert c.needs_grad
    assert c.score(W, G, np.ones((2, 2))).tolist() == [[0.5, 0.5], [1.0, 4.0]]


def test_snip():
    c = crit("snip")
    assert c.needs_grad
    assert c.score(W, G, None).tolist() == [[0.5, 1.0], [3.0, 2.0]]


def test_snip_momentum_accumulates():
    c = crit("snip_momentum")
    assert c.needs_grad
    s1 = c.score(W, G, None)
    assert s1.tolist() == [[0.5, 1.0], [3.0, 2.0]]
    s2 = c.score(W, 2 * G, s1)  # 0.9 * s1 + |W * 2G|
    assert np.allclose(s2, [[0.45 + 1.0, 0.9 + 2.0], [2.7 + 6.0, 1.8 + 4.0]], rtol=0, atol=1e-12)
    s3 = c.score(W, np.zeros((2, 2)), s2)
    assert np.allclose(s3, 0.9 * s2, rtol=0, atol=1e-12)


def test_criteria_keep_dtype_and_work_on_torch():
    torch = pytest.importorskip("torch")
    w, g = torch.tensor(W, dtype=torch.float32), torch.tensor(G, dtype=torch.float32)
    s = crit("snip_momentum").score(w, g, None)
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float32
    assert s.tolist() == [[0.5, 1.0], [3.0, 2.0]]
    assert crit("magnitude").score(W.astype(np.float32), None, None).dtype == np.float32


def test_group_lasso_gradient_term_hand_example():
    cfg = WeightPruningConfig(pattern="4x1", reg_type="group_lasso", parameters={"reg_coeff": 0.1}).groups[0]
    reg = GroupLasso(cfg, get_pattern(cfg))
    assert reg.coeff == 0.1
    w = np.array([[3.0, 1.0], [4.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)  # column norms 5 and 2
    term = reg.grad_term("fc", w)
    assert term.dtype == np.float32 and term.shape == (4, 2)
    assert np.allclose(term, [[0.06, 0.05], [0.08, 0.05], [0.0, 0.05], [0.0, 0.05]], rtol=1e-6, atol=0)


def test_group_lasso_on_channel_and_conv_blocks():
    cfg = WeightPruningConfig(pattern="1xchannel", reg_type="group_lasso", parameters={"reg_coeff": 1.0}).groups[0]
    reg = GroupLasso(cfg, get_pattern(cfg))
    w = np.zeros((2, 2, 1, 2))
    w[0] = [[[3.0, 0.0]], [[0.0, 4.0]]]  # filter 0: norm 5
    w[1] = 1.0  # filter 1: 4 ones, norm 2
    term = reg.grad_term("conv", w)
    assert np.allclose(term[0], w[0] / 5) and np.allclose(term[1], 0.5)


def test_group_lasso_zero_block_gives_zero_term():
    cfg = WeightPruningConfig(pattern="2x1", reg_type="group_lasso", parameters={"reg_coeff": 1.0}).groups[0]
    term = GroupLasso(cfg, get_pattern(cfg)).grad_term("fc", np.zeros((2, 2)))
    assert np.array_equal(term, np.zeros((2, 2)))


def test_group_lasso_with_n_m_is_a_config_error():
    with pytest.raises(ConfigError, match=r"reg_type='group_lasso' needs a block pattern.*'2:4'"):
        WeightPruningConfig(pattern="2:4", target_sparsity=0.5, reg_type="group_lasso",
                            parameters={"reg_coeff": 0.1})
    # the regularizer and the pruner check too, for configs that bypass WeightPruningConfig
    cfg = dict(DEFAULTS, pattern="2:4", target_sparsity=0.5, reg_type="group_lasso", parameters={"reg_coeff": 0.1})
    with pytest.raises(ConfigError, match=r"reg_type='group_lasso' needs a block pattern.*'2:4'"):
        GroupLasso(cfg, get_pattern(cfg))
    with pytest.raises(ConfigError, match="group_lasso"):
        BasicPruner(cfg, {})
