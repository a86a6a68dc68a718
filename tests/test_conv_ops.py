"""Tests for `prospr_jax.ops.conv_ops`: `lax.conv_general_dilated`'s values and derivatives of every
order, computed by the three bilinear primitives; and where they are (not) used."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from prospr_jax.ops import conv_ops

NHWC = ("NHWC", "HWIO", "NHWC")

GEOMETRIES = [  # (input H, kernel, stride, padding)
    (7, 3, 1, ((1, 1), (1, 1))),
    (8, 3, 2, ((1, 1), (1, 1))),
    (8, 1, 2, ((0, 0), (0, 0))),  # a ResNet projection shortcut: the last row is never read
    (9, 5, 3, ((0, 2), (1, 0))),  # asymmetric padding, stride 3
    (7, 3, 2, "SAME"),
]


def _loss(conv, strides, padding, x, w):
  """A non-quadratic scalar of the (channels-last) conv's output, so every derivative order is
  non-trivial."""
  dims = lax.conv_dimension_numbers(x.shape, w.shape, conv_ops.channels_last(x.ndim - 2))
  y = conv(x, w, strides, padding, dimension_numbers=dims)
  return jnp.sum(jnp.tanh(y) ** 2)


def _value_and_derivatives(f, x, w):
  """f, its gradient, a gradient of a function of its gradient, and a jvp of its gradient."""
  grad = jax.grad(f, (0, 1))
  return (f(x, w), grad(x, w),
          jax.grad(lambda x, w: jnp.sum(jnp.sin(grad(x, w)[1])) + jnp.sum(grad(x, w)[0] ** 2),
                   (0, 1))(x, w),
          jax.jvp(grad, (x, w), (0.3 * x, 0.7 * w))[1])


def _assert_same(transform, x_shape, w_shape, strides, padding):
  """`transform(f, x, w)` agrees for `lax.conv_general_dilated` and `conv_ops` (float64)."""
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, x_shape, jnp.float64)
  w = jax.random.normal(kw, w_shape, jnp.float64)
  ref = functools.partial(_loss, lax.conv_general_dilated, strides, padding)
  ours = functools.partial(_loss, conv_ops.conv_general_dilated, strides, padding)
  assert "prospr_conv_rhs_transpose[" in str(jax.make_jaxpr(jax.grad(ours, 1))(x, w))
  expected = jax.jit(functools.partial(transform, ref))(x, w)
  actual = jax.jit(functools.partial(transform, ours))(x, w)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12),
               actual, expected)


def _assert_same_2d(transform, geometry, batch=2):
  """`_assert_same` for a 2-D `geometry = (input H, kernel, stride, padding)`."""
  size, k, stride, padding = geometry
  _assert_same(transform, (batch, size, size + 1, 2), (k, k, 2, 3), (stride, stride), padding)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_values_and_first_and_second_derivatives_match_lax(x64, geometry):
  _assert_same_2d(_value_and_derivatives, geometry)


@pytest.mark.parametrize("transform", [
    lambda f, x, w: jax.hessian(f, 1)(x, w),
    lambda f, x, w: jax.grad(lambda w: jnp.sum(jax.grad(
        lambda w: jnp.sum(jax.grad(f, 1)(x, w) ** 3))(w) ** 2))(w),
    lambda f, x, w: jax.vmap(jax.grad(f, 1), (None, 0))(x, jnp.stack([w, -w])),
], ids=["hessian", "third order", "vmap of grad"])
def test_hessian_third_order_and_vmap_match_lax(x64, transform):
  _assert_same_2d(transform, GEOMETRIES[1])


@pytest.mark.parametrize("spatial, kernel, strides", [
    ((9,), (3,), (2,)), ((5, 6, 4), (3, 1, 2), (1, 2, 1))], ids=["1-D", "3-D"])
def test_one_and_three_spatial_dims_match_lax(x64, spatial, kernel, strides, monkeypatch):
  monkeypatch.setattr(conv_ops, "WEIGHT_GRAD_CHUNK", 2)
  _assert_same(_value_and_derivatives, (5, *spatial, 2), (*kernel, 2, 3), strides,
               [(1, 0)] * len(spatial))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_weight_gradient_summed_over_uneven_batch_chunks_matches_lax(x64, geometry, monkeypatch):
  # 2 full chunks in the loop and a partial one after it sum to the whole batch's reduction.
  monkeypatch.setattr(conv_ops, "WEIGHT_GRAD_CHUNK", 4)
  _assert_same_2d(_value_and_derivatives, geometry, batch=11)


def test_every_derivative_order_uses_only_the_three_primitives():
  x = jnp.ones((2, 6, 6, 3))
  w = jnp.ones((3, 3, 3, 4))
  f = functools.partial(_loss, conv_ops.conv_general_dilated, (2, 2), ((1, 1), (1, 1)))
  second = jax.grad(lambda x, w: jnp.sum(jax.grad(f, 1)(x, w) ** 2), (0, 1))
  jaxpr = str(jax.make_jaxpr(second)(x, w))
  assert "conv_general_dilated" not in jaxpr
  for primitive in (conv_ops.conv_p, conv_ops.conv_lhs_t_p, conv_ops.conv_rhs_t_p):
    assert f"{primitive.name}[" in jaxpr


@pytest.mark.parametrize("kwargs, kernel_shape", [
    ({"dimension_numbers": ("NCHW", "OIHW", "NCHW")}, (4, 6, 3, 3)),
    ({"dimension_numbers": NHWC, "rhs_dilation": (2, 2)}, (3, 3, 6, 4)),
    ({"dimension_numbers": NHWC, "lhs_dilation": (2, 2)}, (3, 3, 6, 4)),
    ({"dimension_numbers": NHWC, "preferred_element_type": jnp.float32}, (3, 3, 6, 4)),
])
def test_other_convolutions_are_lax_itself(kwargs, kernel_shape):
  x = jnp.ones((2, 6, 6, 6))
  w = jnp.ones(kernel_shape)
  jaxpr = str(jax.make_jaxpr(
      lambda x, w: conv_ops.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), **kwargs))(x, w))
  assert "conv_general_dilated[" in jaxpr and "prospr_conv" not in jaxpr


def test_feature_groups_are_lax_itself():
  x = jnp.ones((2, 6, 6, 4))
  w = jnp.ones((3, 3, 2, 4))
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv_ops.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=2))(x, w))
  assert "conv_general_dilated[" in jaxpr and "prospr_conv" not in jaxpr


def test_flax_conv_accepts_it_as_its_conv_general_dilated():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  ours = nn.Conv(5, (3, 3), strides=2, padding=((1, 1), (1, 1)),
                 conv_general_dilated=conv_ops.conv_general_dilated)
  ref = nn.Conv(5, (3, 3), strides=2, padding=((1, 1), (1, 1)))
  variables = ref.init(jax.random.key(0), x)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-6)
  assert "prospr_conv[" in str(jax.make_jaxpr(ours.apply)(variables, x))
