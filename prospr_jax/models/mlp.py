"""Multi-layer perceptrons."""

from __future__ import annotations

import flax.linen as nn
import jax


class LeNet300100(nn.Module):
  """LeNet-300-100 (LeCun et al., 1998): a fully connected 300-100 ReLU network.

  Computes `x [B, ...] -> flatten [B, D] -> Dense 300 -> ReLU -> Dense 100 -> ReLU ->
  head [B, num_classes]`. Any input shape is flattened, so `D = H * W * C` for images
  (784 on 28x28x1, giving 266,610 parameters with 10 classes). Dense layers use the
  Flax default initialisation (LeCun normal kernels, zero biases).

  Attributes:
    num_classes: number of output logits.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` is unused (no BatchNorm/dropout)."""
    del train
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(300, name="fc1")(x))
    x = nn.relu(nn.Dense(100, name="fc2")(x))
    return nn.Dense(self.num_classes, name="head")(x)
