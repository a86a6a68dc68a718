"""The convolution variants that `conv_ablation` and `score_precision` compare.

  lax         every conv is `lax.conv_general_dilated` (the library before `conv_ops`);
  conv_wgrad  `conv_ops`' primitives, with the weight gradient lowered as ONE convolution over
              the whole batch (`conv_ops` before it looped over chunks of the batch);
  conv_ops    `conv_ops` as shipped.

`use(name)` points the library at a variant. The zoo's convs read it at trace time, so call
`jax.clear_caches()` before tracing again: the library's jits are module-level.
`largest_relative_difference` is how both compare two variants' scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jax import lax

from prospr_jax.ops import conv_ops

# pylint: disable=protected-access  (a variant swaps `conv_ops`' private weight-gradient lowering)

VARIANTS = ("lax", "conv_wgrad", "conv_ops")

_SHIPPED = (conv_ops.conv_general_dilated, conv_ops._rhs_transpose)


def use(name: str) -> None:
  """Points `prospr_jax.ops.conv_ops` at the variant `name` (one of `VARIANTS`)."""
  if name not in VARIANTS:
    raise ValueError(f"Unknown conv variant {name!r}; expected one of {VARIANTS}.")
  conv_ops.conv_general_dilated, conv_ops._rhs_transpose = _SHIPPED
  if name == "lax":
    conv_ops.conv_general_dilated = lax.conv_general_dilated
  elif name == "conv_wgrad":
    conv_ops._rhs_transpose = conv_ops._rhs_transpose_chunk


def largest_relative_difference(reference: Sequence[np.ndarray],
                                other: Sequence[np.ndarray]) -> float:
  """max over leaves of max|reference - other| / max|reference| (a leaf whose `reference` is
  all zero: max|reference - other|)."""
  errors = []
  for a, b in zip(reference, other, strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(a))
    errors.append(float(np.max(np.abs(a - b)) / (scale if scale > 0 else 1.0)))
  return max(errors)
