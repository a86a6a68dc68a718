"""The convolution variants that `conv_ops_ablation.py` and `score_precision_check.py` compare.

  lax         every conv is `lax.conv_general_dilated` (the library before `conv_ops`);
  conv_wgrad  `conv_ops`' primitives, with the weight gradient lowered as ONE convolution over
              the batch (`conv_ops` before its weight gradient became per-offset matrix products);
  conv_ops    `conv_ops` as shipped.

`use(name)` points the library at a variant. The zoo's convs read it at trace time, so call
`jax.clear_caches()` before tracing again: the library's jits are module-level.
"""

from __future__ import annotations

import jax
from jax import lax

from prospr_jax import conv_ops

VARIANTS = ("lax", "conv_wgrad", "conv_ops")

_SHIPPED = (conv_ops.conv_general_dilated, conv_ops._rhs_transpose)  # pylint: disable=protected-access


def rhs_transpose_as_one_conv(x: jax.Array, dy: jax.Array,
                              geometry: conv_ops.Geometry) -> jax.Array:
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


def use(name: str) -> None:
  """Points `prospr_jax.conv_ops` at the variant `name` (one of `VARIANTS`)."""
  if name not in VARIANTS:
    raise ValueError(f"Unknown conv variant {name!r}; expected one of {VARIANTS}.")
  conv_ops.conv_general_dilated, conv_ops._rhs_transpose = _SHIPPED  # pylint: disable=protected-access
  if name == "lax":
    conv_ops.conv_general_dilated = lax.conv_general_dilated
  elif name == "conv_wgrad":
    conv_ops._rhs_transpose = rhs_transpose_as_one_conv  # pylint: disable=protected-access

