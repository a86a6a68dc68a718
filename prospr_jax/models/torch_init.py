"""PyTorch's weight initializations as Flax initializers, for networks that start as their PyTorch originals.

Fans agree between the layouts: a Flax conv kernel `[kh, kw, in, out]` (a Dense kernel
`[in, out]`) has `fan_in = kh * kw * in` and `fan_out = kh * kw * out`, as the PyTorch
weight `[out, in, kh, kw]` (`[out, in]`). Unlike Flax's `kaiming_normal` (a truncated normal
rescaled to the same variance), `torch.nn.init.kaiming_normal_` draws from a plain normal.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Initializer = jax.nn.initializers.Initializer

KAIMING_NORMAL_FAN_IN: Initializer = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
"""`torch.nn.init.kaiming_normal_(w)` (defaults: fan-in, ReLU gain): `N(0, 2 / fan_in)`."""

KAIMING_NORMAL_FAN_OUT: Initializer = jax.nn.initializers.variance_scaling(
    2.0, "fan_out", "normal")
"""`kaiming_normal_(w, mode='fan_out', nonlinearity='relu')` (torchvision's VGG): `N(0, 2 / fan_out)`."""

DEFAULT_KERNEL: Initializer = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
"""PyTorch's default `nn.Conv2d` / `nn.Linear` weight, `kaiming_uniform_(a=sqrt(5))`:
`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`."""


@functools.cache
def default_bias(fan_in: int) -> Initializer:
  """PyTorch's default `nn.Conv2d` / `nn.Linear` bias for a layer with `fan_in` inputs per output:
  `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`. One object per `fan_in`, so that two modules built
  alike compare equal (population training requires its members to share one model)."""
  bound = 1 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
