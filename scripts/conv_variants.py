"""The convolution variants that `conv_ops_ablation.py` and `score_precision_check.py` compare.

  lax         every conv is `lax.conv_general_dilated` (the library before `conv_ops`);
  conv_wgrad  `conv_ops`' primitives, with the weight gradient lowered as ONE convolution over
              the whole batch (`conv_ops` before it looped over chunks of the batch);
  conv_ops    `conv_ops` as shipped.

`use(name)` points the library at a variant. The zoo's convs read it at trace time, so call
`jax.clear_caches()` before tracing again: the library's jits are module-level.
"""

from __future__ import annotations

from jax import lax

from prospr_jax import conv_ops

VARIANTS = ("lax", "conv_wgrad", "conv_ops")

_SHIPPED = (conv_ops.conv_general_dilated, conv_ops._rhs_transpose)  # pylint: disable=protected-access


def use(name: str) -> None:
  """Points `prospr_jax.conv_ops` at the variant `name` (one of `VARIANTS`)."""
  if name not in VARIANTS:
    raise ValueError(f"Unknown conv variant {name!r}; expected one of {VARIANTS}.")
  conv_ops.conv_general_dilated, conv_ops._rhs_transpose = _SHIPPED  # pylint: disable=protected-access
  if name == "lax":
    conv_ops.conv_general_dilated = lax.conv_general_dilated
  elif name == "conv_wgrad":
    conv_ops._rhs_transpose = conv_ops._rhs_transpose_chunk  # pylint: disable=protected-access

