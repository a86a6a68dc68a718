"""CIFAR-style VGG networks with BatchNorm, as used in pruning-at-initialization papers.

The SNIP/GraSP/ProsPr CIFAR VGGs keep the convolutional part of VGG (Simonyan & Zisserman,
2015) with BatchNorm after every conv, drop the three large fully connected layers and put a
single linear classifier on the pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from prospr_jax.models.convnet import ConvBNReLU, global_avg_pool, max_pool_2x2

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
  bias-free conv + BN + ReLU, named `conv1`, `conv2`, ... in order) with 2x2 max-pools at
  the 'M' entries, so the five pools take 32x32 CIFAR images to `[B, 1, 1, 512]`
  (64x64 Tiny-ImageNet images to `[B, 2, 2, 512]`); then global average pooling `[B, 512]`
  (the flatten of the 1x1 map on CIFAR) and the linear classifier `head` -> `[B, num_classes]`.

  Conv kernels use He-normal fan-in init (GraSP/ProsPr: `kaiming_normal_`), the head the
  Flax Dense default. VGG-16 on CIFAR-10 has 14,724,042 parameters.

  Attributes:
    num_classes: number of output logits.
    config: layer plan, e.g. `VGG_CONFIGS['vgg16']`.
  """

  num_classes: int
  config: Sequence[int | str]

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` selects batch vs. running BN statistics."""
    n_conv = 0
    for layer in self.config:
      if layer == "M":
        x = max_pool_2x2(x)
      else:
        n_conv += 1
        x = ConvBNReLU(int(layer), name=f"conv{n_conv}")(x, train=train)
    return nn.Dense(self.num_classes, name="head")(global_avg_pool(x))
