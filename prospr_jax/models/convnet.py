"""Small convolutional networks, and the conv/BatchNorm helpers shared by all conv models.

Conventions shared by every convolutional model in `prospr_jax.models`:

* Convolutions that feed a BatchNorm have no bias (as in the PyTorch originals), except in
  `vgg16_prospr` (the ProsPr authors' VGG keeps torchvision's conv biases). Conv kernels use
  He-normal fan-in initialisation (`nn.initializers.kaiming_normal()`: variance
  `2 / fan_in`), the variance of `torch.nn.init.kaiming_normal_` with its default
  `mode='fan_in'` as used by the GraSP-style CIFAR VGG/ResNet code (Flax draws from a
  truncated normal rescaled to that variance, PyTorch from a plain normal); dense layers
  the Flax default (LeCun normal kernel, zero bias). The ImageNet ResNet-50 follows
  torchvision instead (fan-out, see `resnet.py`), and the `*_prospr` networks draw exactly
  as the ProsPr authors' PyTorch code (`torch_init.py`).
* Padding is explicit, `kernel_size // 2` on each side like PyTorch, so strided convolutions
  sample the same positions as the PyTorch models (Flax's 'SAME' pads asymmetrically).
* Every conv computes with `prospr_jax.ops.conv_ops.conv_general_dilated`: `lax`'s values, but
  on XLA:CPU its derivatives of every order (ProsPr's backprop through backprop) stay standard
  convolutions; on other backends it is `lax.conv_general_dilated` itself.
* BatchNorm is `nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)`;
  its running statistics live in the `batch_stats` collection.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from prospr_jax.ops import conv_ops

Initializer = jax.nn.initializers.Initializer

CONV_INIT: Initializer = nn.initializers.kaiming_normal()
"""He-normal, fan-in (`torch.nn.init.kaiming_normal_` default mode) conv kernel init."""

DENSE_INIT: Initializer = nn.initializers.lecun_normal()
"""Flax's default `nn.Dense` kernel init (LeCun normal), the zoo's `head` kernel init."""


def conv(
    features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: int | None = None,
    use_bias: bool = False,
    kernel_init: Initializer = CONV_INIT,
    name: str | None = None,
) -> nn.Conv:
  """Returns a square 2-D convolution with PyTorch-style symmetric zero padding.

  Computed by `conv_ops.conv_general_dilated` (module docstring). `padding` zeros are added on
  each side of both spatial dims; None means `kernel_size // 2`, which for odd `kernel_size`
  maps `[B, H, W, C]` to `[B, ceil(H / strides), ceil(W / strides), features]`.
  """
  pad = kernel_size // 2 if padding is None else padding
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(strides, strides),
      padding=((pad, pad), (pad, pad)),
      use_bias=use_bias,
      kernel_init=kernel_init,
      conv_general_dilated=conv_ops.conv_general_dilated,
      name=name,
  )


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """Returns the project's BatchNorm: batch statistics when `train`, running averages otherwise."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBNReLU(nn.Module):
  """`relu(bn(conv(x)))`, a 3x3 stride-1 conv, padding 1: `[B, H, W, C] -> [B, H, W, features]`.

  Submodules are named `conv` and `bn`, so params are `<name>/conv/kernel` (and
  `<name>/conv/bias` with `use_bias`, initialised to 0), `<name>/bn/{scale,bias}` and the
  running statistics `batch_stats/<name>/bn/{mean,var}`.

  Attributes:
    features: output channels.
    use_bias: whether the conv adds a bias (redundant before BatchNorm; PyTorch's default).
    kernel_init: conv kernel initializer.
  """

  features: int
  use_bias: bool = False
  kernel_init: Initializer = CONV_INIT

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = conv(self.features, 3, use_bias=self.use_bias, kernel_init=self.kernel_init, name="conv")(x)
    return nn.relu(batch_norm(train, name="bn")(x))


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 (an odd last row/column is dropped): `[B, H, W, C] -> [B, H // 2, W // 2, C]`.

  Same forward values as `nn.max_pool(x, (2, 2), strides=(2, 2))`, but written as a reshape
  and a max-reduction: on XLA:CPU the backward pass of `nn.max_pool` (select-and-scatter)
  is slow, ~40 ms at batch 128 on a 28x28x16 map, about 6x this version's. The one
  difference is the gradient at ties inside a window, which is shared equally between the
  tied inputs instead of going to the first one; after a ReLU the common tie (all zeros)
  receives no gradient either way.
  """
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial axes: `[B, H, W, C] -> [B, C]`."""
  return jnp.mean(x, axis=(1, 2))


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, no BatchNorm.

  Computes (28x28 input; a 32x32 input gives 32 -> 16 -> 12 -> 6, i.e. 576 flat features):

    conv1 5x5x6, padding 2, + bias, ReLU, maxpool 2  : [B, 28, 28, C] -> [B, 14, 14, 6]
    conv2 5x5x16, no padding, + bias, ReLU, maxpool 2: -> [B, 10, 10, 16] -> [B, 5, 5, 16]
    flatten -> fc1 120 -> ReLU -> fc2 84 -> ReLU -> head num_classes  : [B, 400] -> [B, num_classes]

  conv1's padding of 2 is the usual way to feed 28x28 MNIST-style images to the 32x32 design.
  Conv kernels use He-normal fan-in init; dense layers the Flax default (LeCun normal).
  With 28x28x1 inputs and 10 classes it has 61,706 parameters.

  Attributes:
    num_classes: number of output logits.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` is unused (no BatchNorm/dropout)."""
    del train
    x = max_pool_2x2(nn.relu(conv(6, 5, use_bias=True, name="conv1")(x)))
    x = max_pool_2x2(nn.relu(conv(16, 5, padding=0, use_bias=True, name="conv2")(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(120, name="fc1")(x))
    x = nn.relu(nn.Dense(84, name="fc2")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class SmallConvNet(nn.Module):
  """A small VGG-style BatchNorm conv net, fast to train on CPU (e.g. Fashion-MNIST).

  Computes, for a `[B, H, W, C]` input (shapes for 28x28; every conv is a 3x3 ConvBNReLU):

    conv1 x16, maxpool 2          : [B, 28, 28, C] -> [B, 14, 14, 16]
    conv2 x32, maxpool 2          : -> [B, 7, 7, 32]
    conv3 x64, conv4 x64          : -> [B, 7, 7, 64]
    global average pool -> head   : -> [B, 64] -> [B, num_classes]

  Widths are kept small at full resolution because XLA:CPU training time is dominated by
  the convolutions on the 28x28 and 14x14 maps (a 32-32-pool-64-64 stack is ~4x slower).
  With 28x28x1 inputs and 10 classes it has 61,050 parameters (60,688 of them in kernels).

  Attributes:
    num_classes: number of output logits.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` selects batch vs. running BN statistics."""
    x = max_pool_2x2(ConvBNReLU(16, name="conv1")(x, train=train))
    x = max_pool_2x2(ConvBNReLU(32, name="conv2")(x, train=train))
    x = ConvBNReLU(64, name="conv3")(x, train=train)
    x = ConvBNReLU(64, name="conv4")(x, train=train)
    return nn.Dense(self.num_classes, name="head")(global_avg_pool(x))
