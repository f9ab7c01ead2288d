"""Layouts: every transform round-trips, and the canonical array *is* the torch weight — proven by running
the Keras layer and the torch op on the same input with the transformed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from nc_prune.core.errors import ConfigError, PatternShapeError
from nc_prune.keras.layout import (CANONICAL, CONV, CONV_TRANSPOSE, DENSE, DEPTHWISE, EinsumLayout, get_layout)

from .conftest import L, keras

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


@pytest.mark.parametrize("layout,shape", [
    (DENSE, (5, 3)), (CONV, (3, 5, 4, 8)), (CONV, (3, 4, 8)), (CONV, (2, 3, 3, 4, 6)), (CONV_TRANSPOSE, (3, 3, 8, 4)),
    (DEPTHWISE, (3, 3, 4, 2)), (DEPTHWISE, (5, 4, 3)), (CANONICAL, (6, 2, 3)),
    (EinsumLayout((1, 2), (0,)), (8, 2, 4)), (EinsumLayout((2,), (0, 1)), (2, 4, 8)),
])
def test_round_trip_moves_every_number_back(layout, shape):
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    c = layout.to_canonical(a)
    assert c.shape == layout.canonical_shape(shape)
    assert sorted(c.ravel().tolist()) == sorted(a.ravel().tolist())
    np.testing.assert_array_equal(layout.from_canonical(c, shape), a)


def test_dense_kernel_is_the_transposed_linear_weight():
    layer = L.Dense(6, use_bias=False)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    y = np.asarray(layer(x))
    w = DENSE.to_canonical(layer.kernel.numpy())
    assert w.shape == (6, 5)
    np.testing.assert_allclose(F.linear(_t(x), _t(w)).numpy(), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_kernel_is_the_torch_conv_weight(dims):
    cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[dims]
    layer = cls(4, 3, use_bias=False)
    x = np.random.default_rng(1).normal(size=(2,) + (5,) * dims + (3,)).astype("float32")
    y = np.asarray(layer(x))
    w = CONV.to_canonical(layer.kernel.numpy())
    assert w.shape == (4, 3) + (3,) * dims
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    out = conv(_t(np.moveaxis(x, -1, 1)), _t(w)).numpy()
    np.testing.assert_allclose(np.moveaxis(out, 1, -1), y, rtol=1e-4, atol=1e-5)


def test_grouped_conv_kernel_is_the_torch_grouped_weight():
    layer = L.Conv2D(8, 3, groups=2, use_bias=False)
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 4)).astype("float32")
    y = np.asarray(layer(x))
    w = CONV.to_canonical(layer.kernel.numpy())
    assert w.shape == (8, 2, 3, 3)
    out = F.conv2d(_t(np.moveaxis(x, -1, 1)), _t(w), groups=2).numpy()
    np.testing.assert_allclose(np.moveaxis(out, 1, -1), y, rtol=1e-4, atol=1e-5)


def test_depthwise_kernel_is_the_torch_grouped_conv_weight():
    layer = L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 3)).astype("float32")
    y = np.asarray(layer(x))
    w = DEPTHWISE.to_canonical(layer.kernel.numpy())
    assert w.shape == (6, 1, 3, 3)  # filter i*mult + m
    out = F.conv2d(_t(np.moveaxis(x, -1, 1)), _t(w), groups=3).numpy()
    np.testing.assert_allclose(np.moveaxis(out, 1, -1), y, rtol=1e-4, atol=1e-5)


def test_conv_transpose_kernel_is_the_torch_weight_with_in_and_out_swapped():
    layer = L.Conv2DTranspose(4, 3, use_bias=False)
    x = np.random.default_rng(4).normal(size=(2, 5, 5, 3)).astype("float32")
    y = np.asarray(layer(x))
    w = CONV_TRANSPOSE.to_canonical(layer.kernel.numpy())
    assert w.shape == (4, 3, 3, 3)
    out = F.conv_transpose2d(_t(np.moveaxis(x, -1, 1)), _t(w).transpose(0, 1)).numpy()
    np.testing.assert_allclose(np.moveaxis(out, 1, -1), y, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_projections_are_linear_layers_over_flattened_heads():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, use_bias=False)
    x = np.random.default_rng(5).normal(size=(2, 4, 6)).astype("float32")
    mha(x, x)
    q = mha.query_dense
    lay = EinsumLayout.from_equation(q.equation)
    w = lay.to_canonical(q.kernel.numpy())
    assert w.shape == (6, 6)  # (heads*head_dim, dim), unit h*head_dim + d
    np.testing.assert_allclose(np.asarray(q(x)).reshape(2, 4, 6), F.linear(_t(x), _t(w)).numpy(), rtol=1e-5, atol=1e-6)
    o = mha.output_dense
    lay_o = EinsumLayout.from_equation(o.equation)
    wo = lay_o.to_canonical(o.kernel.numpy())
    h = np.random.default_rng(6).normal(size=(2, 4, 2, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(o(h)), F.linear(_t(h.reshape(2, 4, 6)), _t(wo)).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_einsum_with_ellipsis_and_shared_axes():
    assert EinsumLayout.from_equation("...b,bc->...c") == EinsumLayout((1,), (0,))
    assert EinsumLayout.from_equation("abc,bcd->abd") == EinsumLayout((0, 2), (1,))


@pytest.mark.parametrize("equation,match", [
    ("ab,bc", "not of the form"), ("ab,bcz->ac", "neither contracted"), ("ab,b->a", "no output axis"),
])
def test_einsum_equations_that_have_no_out_in_view_are_rejected(equation, match):
    with pytest.raises(ConfigError, match=match):
        EinsumLayout.from_equation(equation)


def test_get_layout_by_name_and_errors():
    assert get_layout("depthwise") is DEPTHWISE
    assert get_layout("einsum:abc,cd->abd") == EinsumLayout((1,), (0,))
    assert get_layout(CONV) is CONV
    with pytest.raises(ConfigError, match="unknown weight layout 'dens'.*'dense'"):
        get_layout("dens")


def test_shape_errors_name_the_layout_and_shapes():
    with pytest.raises(PatternShapeError, match="'dense' needs a 2-D kernel"):
        DENSE.to_canonical(np.zeros((2, 3, 4)))
    with pytest.raises(PatternShapeError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        DENSE.from_canonical(np.zeros((3, 2)), (3, 2))
    with pytest.raises(PatternShapeError, match="at least 3 dimensions"):
        CONV.canonical_shape((4, 4))
