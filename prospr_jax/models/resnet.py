"""Residual networks (He et al., 2016): CIFAR ResNet-20/32/56, small-input ResNet-18, ResNet-50.

Shortcuts use *option B* of the ResNet paper everywhere: the identity when a block keeps
its input's shape, otherwise a projection `shortcut_bn(shortcut_conv(x))` with a bias-free
1x1 conv (stride = the block's stride) followed by BatchNorm. (The original CIFAR ResNets
use parameter-free option A, zero-padded subsampling; option B adds 2,752 parameters to
ResNet-20, 272,474 in all instead of 269,722.)

Residual coupling, for structured pruning: in every block the output of its last BatchNorm
(`bn2` for `BasicBlock`, `bn3` for `Bottleneck`) is added elementwise to the shortcut,
which is `shortcut_bn`'s output when the block has `shortcut_conv`, else the block's input.
So within a stage, the output channels of the last BN of every block, of the first block's
`shortcut_bn` (or, if the stage's first block has no projection, of whatever produced the
stage's input: `stem_bn` or the previous stage's sum) are one coupled channel group.

Block modules are named `stage{s}_block{b}` (s from 1, b from 0), the stem `stem_conv` /
`stem_bn`, the classifier `head`.

Width overrides (for channel-pruned, compacted models, see `prospr_jax.compaction`): a block's
`widths` gives the output channels of its convs, and `ResNet.stem_width` / `block_widths`
set them for the whole network. Whether a block has a projection shortcut is decided from the
nominal widths (`stage_features`), never from the overridden ones, so a compacted model keeps
its reference's parameter tree. With the defaults (`None`) nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import flax.linen as nn
import jax

from prospr_jax.models.convnet import CONV_INIT, Initializer, batch_norm, conv, global_avg_pool

FAN_OUT_INIT: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
"""He-normal, fan-out init: torchvision's ImageNet ResNet (`kaiming_normal_(mode='fan_out')`)."""


def _shortcut(
    x: jax.Array,
    out_features: int,
    strides: int,
    kernel_init: Initializer,
    train: bool,
    projection: bool | None = None,
) -> jax.Array:
  """Returns the block input `x` or the projection `shortcut_bn(shortcut_conv(x))`.

  `projection=None` projects iff the block changes the shape (`strides != 1` or
  `x.shape[-1] != out_features`); True/False force it. Must be called inside a block's compact
  `__call__`, which then owns the two submodules.
  """
  if projection is None:
    projection = strides != 1 or x.shape[-1] != out_features
  if not projection:
    if strides != 1 or x.shape[-1] != out_features:
      raise ValueError(
          f"An identity shortcut cannot map {x.shape[-1]} channels at stride {strides} to "
          f"{out_features} channels."
      )
    return x
  x = conv(out_features, 1, strides=strides, kernel_init=kernel_init, name="shortcut_conv")(x)
  return batch_norm(train, name="shortcut_bn")(x)


class _ResidualBlock(nn.Module):
  """Fields shared by `BasicBlock` and `Bottleneck` (documented there)."""

  features: int
  strides: int = 1
  kernel_init: Initializer = CONV_INIT
  widths: Sequence[int] | None = None
  projection: bool | None = None


class BasicBlock(_ResidualBlock):
  """Two 3x3 conv-BN layers with a residual connection: `[B, H, W, C] -> [B, H/s, W/s, features]`.

  Computes `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, `conv1` carrying the
  stride `s`; `shortcut` is the identity or `shortcut_bn(shortcut_conv(x))` (module docstring).

  Attributes:
    features: output channels of both convs (and of the block).
    strides: stride of `conv1` and of the projection shortcut.
    kernel_init: conv kernel initializer.
    widths: optional `(conv1, conv2)` output channels overriding `(features, features)`;
      `conv2`'s is the block's output width.
    projection: force (True) or forbid (False) the projection shortcut; `None` projects iff
      the block changes the shape.
  """

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    w1, w2 = self.widths or (self.features, self.features)
    y = conv(w1, 3, strides=self.strides, kernel_init=self.kernel_init, name="conv1")(x)
    y = nn.relu(batch_norm(train, name="bn1")(y))
    y = conv(w2, 3, kernel_init=self.kernel_init, name="conv2")(y)
    y = batch_norm(train, name="bn2")(y)
    shortcut = _shortcut(x, w2, self.strides, self.kernel_init, train, self.projection)
    return nn.relu(y + shortcut)


class Bottleneck(_ResidualBlock):
  """1x1-3x3-1x1 bottleneck with a residual connection: `[B, H, W, C] -> [B, H/s, W/s, 4 * features]`.

  Computes `relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))` with
  `conv1` 1x1 -> `features`, `conv2` 3x3 -> `features` carrying the stride `s` (torchvision's
  "ResNet v1.5" placement), `conv3` 1x1 -> `4 * features`; `shortcut` as in `BasicBlock`.

  Attributes:
    features: bottleneck width; the block outputs `4 * features` channels.
    strides: stride of `conv2` and of the projection shortcut.
    kernel_init: conv kernel initializer.
    widths: optional `(conv1, conv2, conv3)` output channels overriding
      `(features, features, 4 * features)`; `conv3`'s is the block's output width.
    projection: as in `BasicBlock`.
  """

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    w1, w2, w3 = self.widths or (self.features, self.features, self.expansion * self.features)
    y = conv(w1, 1, kernel_init=self.kernel_init, name="conv1")(x)
    y = nn.relu(batch_norm(train, name="bn1")(y))
    y = conv(w2, 3, strides=self.strides, kernel_init=self.kernel_init, name="conv2")(y)
    y = nn.relu(batch_norm(train, name="bn2")(y))
    y = conv(w3, 1, kernel_init=self.kernel_init, name="conv3")(y)
    y = batch_norm(train, name="bn3")(y)
    shortcut = _shortcut(x, w3, self.strides, self.kernel_init, train, self.projection)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """A ResNet: stem, stages of residual blocks, global average pool, linear `head`.

  Computes, for a `[B, H, W, C]` input:

    stem 'cifar'   : relu(stem_bn(stem_conv 3x3, stride 1))          -> [B, H, W, F0]
    stem 'imagenet': relu(stem_bn(stem_conv 7x7, stride 2, pad 3)),
                     max-pool 3x3, stride 2, pad 1                    -> [B, H/4, W/4, F0]
    stage s = 1, 2, ...: `stage_sizes[s-1]` blocks `block_cls(stage_features[s-1])`, the
                     first one with stride 2 in stages s > 1         -> [B, H0/2^(s-1), W0/2^(s-1), Fs']
    global average pool -> head                                      -> [B, num_classes]

  where `F0 = stage_features[0]`, `H0, W0` the stem's output size and `Fs'` the block output
  width: `stage_features[s-1]` for `BasicBlock`, 4 times that for `Bottleneck`.

  Attributes:
    num_classes: number of output logits.
    stage_sizes: blocks per stage.
    stage_features: block `features` per stage (also the stem width, `stage_features[0]`).
    block_cls: `BasicBlock` or `Bottleneck`.
    stem: 'cifar' (small inputs: CIFAR, Tiny-ImageNet) or 'imagenet' (224x224 inputs).
    kernel_init: conv kernel initializer; the head uses the Flax Dense default.
    stem_width: optional output channels of `stem_conv` (default `stage_features[0]`).
    block_widths: optional per-block conv widths, one `widths` tuple (see `BasicBlock`,
      `Bottleneck`) per block in order `stage1_block0, stage1_block1, ...`.
  """

  num_classes: int
  stage_sizes: Sequence[int]
  stage_features: Sequence[int]
  block_cls: type[BasicBlock] | type[Bottleneck] = BasicBlock
  stem: Literal["cifar", "imagenet"] = "cifar"
  kernel_init: Initializer = CONV_INIT
  stem_width: int | None = None
  block_widths: Sequence[Sequence[int]] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns logits `[batch, num_classes]`; `train` selects batch vs. running BN statistics."""
    n_blocks_total = sum(self.stage_sizes)
    if self.block_widths is not None and len(self.block_widths) != n_blocks_total:
      raise ValueError(
          f"block_widths has {len(self.block_widths)} entries for {n_blocks_total} blocks."
      )
    width = self.stem_width or self.stage_features[0]
    if self.stem == "cifar":
      x = conv(width, 3, kernel_init=self.kernel_init, name="stem_conv")(x)
      x = nn.relu(batch_norm(train, name="stem_bn")(x))
    elif self.stem == "imagenet":
      x = conv(width, 7, strides=2, kernel_init=self.kernel_init, name="stem_conv")(x)
      x = nn.relu(batch_norm(train, name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
    nominal_in, i = self.stage_features[0], 0  # channels entering the block, unpruned
    for s, (n_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_features)):
      for b in range(n_blocks):
        strides = 2 if s > 0 and b == 0 else 1
        nominal_out = self.block_cls.expansion * features
        block = self.block_cls(
            features, strides=strides, kernel_init=self.kernel_init,
            widths=None if self.block_widths is None else tuple(self.block_widths[i]),
            projection=strides != 1 or nominal_in != nominal_out,
            name=f"stage{s + 1}_block{b}",
        )
        x = block(x, train=train)
        nominal_in, i = nominal_out, i + 1
    return nn.Dense(self.num_classes, name="head")(global_avg_pool(x))


def cifar_resnet(depth: int, num_classes: int) -> ResNet:
  """Returns the CIFAR ResNet-`depth` (`depth = 6n + 2`): 3 stages of n BasicBlocks, 16/32/64.

  He-normal fan-in init, as in the common PyTorch CIFAR ResNets (`kaiming_normal_`).
  """
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
  n = (depth - 2) // 6
  return ResNet(num_classes, stage_sizes=(n, n, n), stage_features=(16, 32, 64))


def resnet18(num_classes: int) -> ResNet:
  """Returns ResNet-18 for small inputs (CIFAR, Tiny-ImageNet): 3x3 stride-1 stem, no max-pool.

  Stages of 2 BasicBlocks, 64/128/256/512 channels; He-normal fan-in init.
  11,173,962 parameters with 10 classes.
  """
  return ResNet(num_classes, stage_sizes=(2, 2, 2, 2), stage_features=(64, 128, 256, 512))


def resnet50(num_classes: int) -> ResNet:
  """Returns the ImageNet ResNet-50: 7x7 stride-2 stem + max-pool, 3/4/6/3 Bottlenecks.

  He-normal fan-out init, as torchvision. 25,557,032 parameters with 1000 classes.
  """
  return ResNet(
      num_classes,
      stage_sizes=(3, 4, 6, 3),
      stage_features=(64, 128, 256, 512),
      block_cls=Bottleneck,
      stem="imagenet",
      kernel_init=FAN_OUT_INIT,
  )
