"""CIFAR-style VGG networks with BatchNorm, as used in pruning-at-initialization papers.

The SNIP/GraSP/ProsPr CIFAR VGGs keep the convolutional part of VGG (Simonyan & Zisserman,
2015) with BatchNorm after every conv, drop the three large fully connected layers and put a
single linear classifier on the pooled features. `vgg11`/`vgg16`/`vgg19` are this zoo's
variant (five pools, bias-free convs, He-normal fan-in init); `vgg16_prospr` is the ProsPr
authors' network exactly (four pools, conv biases, torchvision's init).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from prospr_jax.models import torch_init
from prospr_jax.models.convnet import (
    CONV_INIT, DENSE_INIT, ConvBNReLU, Initializer, global_avg_pool, max_pool_2x2)

VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
"""Layer plans: an int is a 3x3 ConvBNReLU with that many output channels, 'M' a 2x2 max-pool."""


class VGG(nn.Module):
  """VGG with BatchNorm for small images: conv stacks, max-pools, global average pool, one head.

  Computes, for a `[B, H, W, C]` input: the ConvBNReLU layers of `config` (3x3, padding 1,
  conv + BN + ReLU, named `conv1`, `conv2`, ... in order) with 2x2 max-pools at the 'M'
  entries, so the five pools of `VGG_CONFIGS` take 32x32 CIFAR images to `[B, 1, 1, 512]`
  (64x64 Tiny-ImageNet images to `[B, 2, 2, 512]`); then global average pooling `[B, 512]`
  (the flatten of the 1x1 map on CIFAR) and the linear classifier `head` -> `[B, num_classes]`.

  With the defaults, convs have no bias, kernels use He-normal fan-in init (GraSP/ProsPr:
  `kaiming_normal_`) and the head the Flax Dense default. VGG-16 on CIFAR-10 has 14,724,042
  parameters.

  Attributes:
    num_classes: number of output logits.
    config: layer plan, e.g. `VGG_CONFIGS['vgg16']`.
    conv_bias: whether every conv adds a bias (zero-initialised) before its BatchNorm.
    kernel_init: conv kernel initializer.
    head_kernel_init, head_bias_init: the head's initializers.
  """

  num_classes: int
  config: Sequence[int | str]
  conv_bias: bool = False
  kernel_init: Initializer = CONV_INIT
  head_kernel_init: Initializer = DENSE_INIT
  head_bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` selects batch vs. running BN statistics."""
    n_conv = 0
    for layer in self.config:
      if layer == "M":
        x = max_pool_2x2(x)
      else:
        n_conv += 1
        x = ConvBNReLU(int(layer), use_bias=self.conv_bias, kernel_init=self.kernel_init,
                       name=f"conv{n_conv}")(x, train=train)
    head = nn.Dense(self.num_classes, kernel_init=self.head_kernel_init,
                    bias_init=self.head_bias_init, name="head")
    return head(global_avg_pool(x))


def vgg16_prospr(num_classes: int) -> VGG:
  """The ProsPr authors' CIFAR VGG-16 (mil-ad/prospr `models/models.py`, after GraSP's).

  Their `model_factory('vgg16', ...)` builds torchvision's `VGG(make_layers(cfg,
  batch_norm=True))` with the VGG-16 plan *without its last pool* and, for inputs smaller
  than ImageNet, replaces the average pool by a global one and the classifier by
  `nn.Linear(512, num_classes)`. So, on 32x32 inputs: 13 ConvBNReLU layers (3x3, padding 1,
  conv bias) and four 2x2 max-pools, the last three convs at 2x2, global average pool, `head`.

  Init as theirs: conv kernels `kaiming_normal_(mode='fan_out', nonlinearity='relu')`
  (`N(0, 2 / (9 * out))`), conv biases 0, BatchNorm scale 1 and bias 0 (torchvision's
  `_initialize_weights`); the replaced classifier keeps PyTorch's `nn.Linear` default,
  `U(-1/sqrt(512), 1/sqrt(512))` for kernel and bias.

  Parameters: 14,728,266 with 10 classes, 14,774,436 with 100 (the zoo's `vgg16` plus 4,224
  conv biases).
  """
  plan = VGG_CONFIGS["vgg16"][:-1]
  return VGG(
      num_classes,
      config=plan,
      conv_bias=True,
      kernel_init=torch_init.KAIMING_NORMAL_FAN_OUT,
      head_kernel_init=torch_init.DEFAULT_KERNEL,
      head_bias_init=torch_init.default_bias(int(plan[-1])),
  )
