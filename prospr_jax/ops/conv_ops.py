"""A drop-in `lax.conv_general_dilated` whose derivatives of every order stay fast on XLA:CPU.

Why: JAX differentiates a convolution with two other convolutions (the input gradient and the
weight gradient, `lax`'s transpose rules), and differentiates *those* again with the same
rules. ProsPr's meta-gradient is backprop through backprop, so it also transposes the weight
gradient with respect to the input. That conv has a 3x3 "input" and a full-size "kernel"; XLA
swaps its operands (sound: it keeps the FLOPs of a 3x3 conv) into a form with a reversed window
and feature/batch-swapped dimensions (`rhs_reversal=1x1`, `dim_labels=01fb_o01i->f01b`) that
XLA:CPU cannot hand to its convolution libraries (YNNPACK, Eigen), so it runs as a naive loop
nest, where the same math written as an ordinary transposed conv takes the fast path. At
ResNet-20, batch 128, k = 3 those loops were 38-43% of the meta-gradient's time
(docs/data/profile_resnet20_cpu.txt).

What: three bilinear primitives that are closed under transposition,

    conv(x, w)          -> y    the forward convolution
    conv_lhs_t(dy, w)   -> dx   its input gradient   (a transposed convolution)
    conv_rhs_t(x, dy)   -> dw   its weight gradient

with `x: [B, *S, C]`, `w: [*K, C, O]`, `y, dy: [B, *S', O]`, all sharing one forward geometry
(strides, padding, `S`, `K`). Each transposes into the other two (for `<y, conv(x, w)> =
<conv_lhs_t(y, w), x> = <conv_rhs_t(x, y), w>`), so gradients, Hessian-vector products and
gradients of gradients of any order are made of these three ops only. `conv` and `conv_lhs_t`
are each lowered as ONE channels-last forward convolution (`NHWC` input, `HWIO` kernel; the
transposed one with a flipped kernel), the form XLA:CPU runs with its libraries; `conv_rhs_t`
as a loop of such convolutions over chunks of the batch (`_rhs_transpose`). The values are
those of `lax`: the forward conv and the input gradient are the same convolutions, and the
weight gradient is the same sum in another order, so results agree to float rounding (the
float64 tests compare every derivative order to 1e-12). Forward mode (`jvp`, `jax.hessian`)
works too: the primitives are bilinear.

Use it as `nn.Conv(..., conv_general_dilated=prospr_jax.ops.conv_ops.conv_general_dilated)`; the
zoo models in `prospr_jax.models` all do. It uses the primitives only for what they cover
(channels-last input and output, a `[*K, C, O]` kernel, no dilation, no feature or batch
groups, no `preferred_element_type`) and only when JAX's default backend is the CPU, decided at
trace time; everything else, and every call while the default backend is a GPU or TPU, is
exactly `lax.conv_general_dilated`. Under `vmap` the primitives fall back to `lax` (correct,
but the vmapped program's derivatives are `lax`'s again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.extend as jex
import numpy as np
from jax import lax
from jax.interpreters import ad, batching, mlir

Padding = tuple[tuple[int, int], ...]


def channels_last(n: int) -> lax.ConvDimensionNumbers:
  """Dimension numbers of `n` spatial dims: `NHWC`, `HWIO`, `NHWC` for `n = 2`."""
  spatial = tuple(range(1, n + 1))
  feature_last = (0, n + 1, *spatial)
  return lax.ConvDimensionNumbers(feature_last, (n + 1, n, *range(n)), feature_last)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The forward convolution `x: [B, *lhs_spatial, C] * w: [*rhs_spatial, C, O]` (hashable).

  Attributes:
    strides: window strides, one per spatial dimension.
    padding: `(low, high)` zero padding of `x`, one pair per spatial dimension.
    lhs_spatial: spatial shape `S` of the input `x`.
    rhs_spatial: spatial shape `K` of the kernel `w`.
    precision: passed to every `lax.conv_general_dilated` of the lowering.
  """

  strides: tuple[int, ...]
  padding: Padding
  lhs_spatial: tuple[int, ...]
  rhs_spatial: tuple[int, ...]
  precision: Any = None

  @property
  def out_spatial(self) -> tuple[int, ...]:
    """Spatial shape `S'` of the output `y`."""
    return tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
                 zip(self.lhs_spatial, self.padding, self.rhs_spatial, self.strides))

  def dimension_numbers(self) -> lax.ConvDimensionNumbers:
    """Channels-last dimension numbers of this rank (see `channels_last`)."""
    return channels_last(len(self.strides))


def _forward(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  """`y = conv(x, w)`: `[B, *S, C], [*K, C, O] -> [B, *S', O]`, a standard forward conv."""
  return lax.conv_general_dilated(
      x, w, geometry.strides, geometry.padding,
      dimension_numbers=geometry.dimension_numbers(), precision=geometry.precision)


def _lhs_transpose(dy: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
  """`dx = conv_lhs_t(dy, w)`: `[B, *S', O], [*K, C, O] -> [B, *S, C]`.

  The transposed convolution: `dy` dilated by the strides, convolved with the spatially
  flipped kernel whose in/out axes are swapped (`[*K, O, C]`).
  """
  n = len(geometry.strides)
  flipped = lax.rev(w, tuple(range(n)))
  flipped = lax.transpose(flipped, (*range(n), n + 1, n))
  padding = []
  for size, (lo, _), k, s, o in zip(geometry.lhs_spatial, geometry.padding,
                                    geometry.rhs_spatial, geometry.strides, geometry.out_spatial):
    before = k - 1 - lo
    padding.append((before, size + k - 1 - ((o - 1) * s + 1) - before))
  return lax.conv_general_dilated(
      dy, flipped, (1,) * n, padding, lhs_dilation=geometry.strides,
      dimension_numbers=geometry.dimension_numbers(), precision=geometry.precision)


WEIGHT_GRAD_CHUNK = 8
"""Samples per convolution of the weight gradient (`_rhs_transpose`); read at trace time."""


def _rhs_transpose(x: jax.Array, dy: jax.Array, geometry: Geometry) -> jax.Array:
  """`dw = conv_rhs_t(x, dy)`: `[B, *S, C], [B, *S', O] -> [*K, C, O]`.

  The sum over chunks of `WEIGHT_GRAD_CHUNK` samples of `_rhs_transpose_chunk`, accumulated in
  a loop, so one chunk's operands are live at a time (the rest of a batch that does not divide
  evenly is one more chunk). Written as one convolution over the whole batch instead (a
  `[*S', B, O]` kernel of the full image size), XLA:CPU made a ResNet-20 training step 1.6x
  slower (`experiments/conv_ops_ablation.py`, variant `conv_wgrad`;
  docs/data/conv_ops_ablation_cpu.txt).
  """
  batch = x.shape[0]
  chunk = min(WEIGHT_GRAD_CHUNK, batch)
  full = batch // chunk
  dw = _rhs_transpose_chunk(x[:chunk], dy[:chunk], geometry)
  if full > 1:
    def add_chunk(i: jax.Array, dw: jax.Array) -> jax.Array:
      x_i = lax.dynamic_slice_in_dim(x, i * chunk, chunk)
      dy_i = lax.dynamic_slice_in_dim(dy, i * chunk, chunk)
      return dw + _rhs_transpose_chunk(x_i, dy_i, geometry)

    dw = lax.fori_loop(1, full, add_chunk, dw)
  if batch % chunk:
    dw = dw + _rhs_transpose_chunk(x[full * chunk:], dy[full * chunk:], geometry)
  return dw


def _rhs_transpose_chunk(x: jax.Array, dy: jax.Array, geometry: Geometry) -> jax.Array:
  """`conv_rhs_t(x, dy)` as one conv: `[B, *S, C], [B, *S', O] -> [*K, C, O]`.

  A forward conv over the batch: `x` as `[C, *S, B]` (channels as the batch, batch as the
  features), `dy` as the kernel `[*S', B, O]` dilated by the strides, giving `[C, *K, O]`.
  """
  n = len(geometry.strides)
  spatial = tuple(range(1, n + 1))
  x_t = lax.transpose(x, (n + 1, *spatial, 0))
  dy_t = lax.transpose(dy, (*spatial, 0, n + 1))
  padding = [(lo, (o - 1) * s + k - size - lo) for size, (lo, _), k, s, o in
             zip(geometry.lhs_spatial, geometry.padding, geometry.rhs_spatial,
                 geometry.strides, geometry.out_spatial)]
  out = lax.conv_general_dilated(
      x_t, dy_t, (1,) * n, padding, rhs_dilation=geometry.strides,
      dimension_numbers=geometry.dimension_numbers(), precision=geometry.precision)
  return lax.transpose(out, (*spatial, 0, n + 1))


def _make_primitive(name: str, impl, out_shape) -> jex.core.Primitive:
  """A primitive `f(a, b, *, geometry)` computed and lowered as `impl`, vmapped as `lax`."""
  primitive = jex.core.Primitive(name)
  primitive.def_impl(impl)
  primitive.def_abstract_eval(
      lambda a, b, *, geometry: jax.core.ShapedArray(out_shape(a, b, geometry), a.dtype))
  mlir.register_lowering(primitive, mlir.lower_fun(impl, multiple_results=False))

  def batch_rule(args, dims, *, geometry):
    return jax.vmap(lambda a, b: impl(a, b, geometry=geometry), in_axes=dims)(*args), 0

  batching.primitive_batchers[primitive] = batch_rule
  return primitive


conv_p = _make_primitive(
    "prospr_conv", lambda x, w, *, geometry: _forward(x, w, geometry),
    lambda x, w, g: (x.shape[0], *g.out_spatial, w.shape[-1]))
conv_lhs_t_p = _make_primitive(
    "prospr_conv_lhs_transpose", lambda dy, w, *, geometry: _lhs_transpose(dy, w, geometry),
    lambda dy, w, g: (dy.shape[0], *g.lhs_spatial, w.shape[-2]))
conv_rhs_t_p = _make_primitive(
    "prospr_conv_rhs_transpose", lambda x, dy, *, geometry: _rhs_transpose(x, dy, geometry),
    lambda x, dy, g: (*g.rhs_spatial, x.shape[-1], dy.shape[-1]))

# Transposition rules: for cotangent `t` of the output, the undefined operand's cotangent.
ad.defbilinear(
    conv_p,
    lambda t, x, w, *, geometry: conv_lhs_t_p.bind(t, w, geometry=geometry),
    lambda t, x, w, *, geometry: conv_rhs_t_p.bind(x, t, geometry=geometry))
ad.defbilinear(
    conv_lhs_t_p,
    lambda t, dy, w, *, geometry: conv_p.bind(t, w, geometry=geometry),
    lambda t, dy, w, *, geometry: conv_rhs_t_p.bind(t, dy, geometry=geometry))
ad.defbilinear(
    conv_rhs_t_p,
    lambda t, x, dy, *, geometry: conv_lhs_t_p.bind(dy, t, geometry=geometry),
    lambda t, x, dy, *, geometry: conv_p.bind(x, t, geometry=geometry))


def _covered(
    lhs: jax.Array, rhs: jax.Array, lhs_dilation, rhs_dilation, dimension_numbers,
    feature_group_count: int, batch_group_count: int, preferred_element_type,
) -> bool:
  """Whether the primitives compute this convolution (see the module docstring)."""
  n = lhs.ndim - 2
  if (n < 1 or rhs.ndim != lhs.ndim or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None or lhs.dtype != rhs.dtype
      or not np.issubdtype(lhs.dtype, np.floating)):
    return False
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return False
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == channels_last(n)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
  """`lax.conv_general_dilated`, same arguments and values, fast to differentiate on XLA:CPU.

  On the CPU backend, a channels-last convolution (`lhs: [B, *S, C]`, `rhs: [*K, C, O]`,
  output `[B, *S', O]`; no dilation, groups or `preferred_element_type`) is computed by the
  `conv_p` primitive, whose derivatives of every order are standard convolutions (module
  docstring). Anything else, and any other backend, calls `lax.conv_general_dilated`.
  """
  if jax.default_backend() != "cpu" or not _covered(
      lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
      batch_group_count, preferred_element_type):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
  spatial_in, spatial_k = lhs.shape[1:-1], rhs.shape[:-2]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(spatial_in, spatial_k, window_strides, padding)
  geometry = Geometry(
      strides=tuple(int(s) for s in window_strides),
      padding=tuple((int(lo), int(hi)) for lo, hi in padding),
      lhs_spatial=tuple(spatial_in), rhs_spatial=tuple(spatial_k),
      precision=tuple(precision) if isinstance(precision, list) else precision)
  return conv_p.bind(lhs, rhs, geometry=geometry)
