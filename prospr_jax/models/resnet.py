"""Residual networks (He et al., 2016): CIFAR ResNet-20/32/56, small-input ResNet-18, ResNet-50,
and the ProsPr authors' ResNet-20 and ResNet-18 (`resnet20_prospr`, `resnet18_prospr`).

A shortcut is the identity when a block keeps its input's shape. Otherwise it is, with
`shortcut='projection'` (the default, *option B* of the ResNet paper), a projection
`shortcut_bn(shortcut_conv(x))` with a bias-free 1x1 conv (stride = the block's stride)
followed by BatchNorm; with `shortcut='zero_pad'` (*option A*, the original CIFAR ResNets and
`resnet20_prospr`) the parameter-free `zero_pad_shortcut`: strided subsampling and zero
channels. Option B adds 2,752 parameters to ResNet-20: 272,474 in all instead of 269,722.

Residual coupling, for structured pruning: in every block the output of its last BatchNorm
(`bn2` for `BasicBlock`, `bn3` for `Bottleneck`) is added elementwise to the shortcut,
which is `shortcut_bn`'s output when the block has `shortcut_conv`, else the block's input.
So within a stage, the output channels of the last BN of every block, of the first block's
`shortcut_bn` (or, if the stage's first block has no projection, of whatever produced the
stage's input: `stem_bn` or the previous stage's sum) are one coupled channel group. A
zero-padding shortcut couples the C input channels with only the middle C of its block's
output channels; the padded ones belong to the block's own last conv/BN. The traced groups of
`prospr_jax.structured` follow that: each stage's new channels are a group that continues
through the later stages at offsets (see `tests/test_structured_paper_models.py`).

Block modules are named `stage{s}_block{b}` (s from 1, b from 0), the stem `stem_conv` /
`stem_bn`, the classifier `head`.

Width overrides (for channel-pruned, compacted models, see `prospr_jax.models.zoo_compaction`): a block's
`widths` gives the output channels of its convs, and `ResNet.stem_width` / `block_widths`
set them for the whole network. Whether a block has a projection shortcut is decided from the
nominal widths (`stage_features`), never from the overridden ones, so a compacted model keeps
its reference's parameter tree. With the defaults (`None`) nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from prospr_jax.models import torch_init
from prospr_jax.models.convnet import (
    CONV_INIT, DENSE_INIT, Initializer, batch_norm, conv, global_avg_pool)

Shortcut = Literal["projection", "zero_pad"]
"""How a block that changes the shape makes its shortcut (module docstring)."""

FAN_OUT_INIT: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
"""He-normal, fan-out init: torchvision's ImageNet ResNet (`kaiming_normal_(mode='fan_out')`)."""


def zero_pad_shortcut(x: jax.Array, out_features: int, strides: int) -> jax.Array:
  """Option-A shortcut: `[B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), out_features]`.

  Keeps every `strides`-th row and column (`x[:, ::s, ::s]`, the positions a stride-`s`
  3x3 conv with padding 1 is centred on) and puts `p = out_features - C` zero channels
  around the C input channels: `p // 2` before, `p - p // 2` after. For the CIFAR ResNets
  (`out_features = 2 C`, stride 2) this is exactly the ProsPr authors' (and Idelbayev's)
  `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`.
  """
  pad = out_features - x.shape[-1]
  if pad < 0:
    raise ValueError(
        f"A zero-padding shortcut cannot map {x.shape[-1]} to {out_features} channels.")
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))


def _shortcut(
    x: jax.Array,
    out_features: int,
    strides: int,
    kernel_init: Initializer,
    train: bool,
    downsample: bool | None = None,
    kind: Shortcut = "projection",
) -> jax.Array:
  """Returns the block input `x`, or the `kind` shortcut of a block that changes the shape.

  `downsample=None` uses the `kind` shortcut iff the block changes the shape (`strides != 1`
  or `x.shape[-1] != out_features`); True/False force it. `kind='projection'` returns
  `shortcut_bn(shortcut_conv(x))` and must be called inside a block's compact `__call__`,
  which then owns the two submodules; `kind='zero_pad'` returns `zero_pad_shortcut(x, ...)`.
  """
  if downsample is None:
    downsample = strides != 1 or x.shape[-1] != out_features
  if not downsample:
    if strides != 1 or x.shape[-1] != out_features:
      raise ValueError(
          f"An identity shortcut cannot map {x.shape[-1]} channels at stride {strides} to "
          f"{out_features} channels."
      )
    return x
  if kind == "zero_pad":
    return zero_pad_shortcut(x, out_features, strides)
  if kind != "projection":
    raise ValueError(f"shortcut must be 'projection' or 'zero_pad', got {kind!r}")
  x = conv(out_features, 1, strides=strides, kernel_init=kernel_init, name="shortcut_conv")(x)
  return batch_norm(train, name="shortcut_bn")(x)


class _ResidualBlock(nn.Module):
  """Fields shared by `BasicBlock` and `Bottleneck` (documented there)."""

  features: int
  strides: int = 1
  kernel_init: Initializer = CONV_INIT
  widths: Sequence[int] | None = None
  downsample: bool | None = None
  shortcut: Shortcut = "projection"


class BasicBlock(_ResidualBlock):
  """Two 3x3 conv-BN layers with a residual connection: `[B, H, W, C] -> [B, H/s, W/s, features]`.

  Computes `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, `conv1` carrying the
  stride `s`; `shortcut` is the identity, `shortcut_bn(shortcut_conv(x))` or
  `zero_pad_shortcut(x)` (module docstring).

  Attributes:
    features: output channels of both convs (and of the block).
    strides: stride of `conv1` and of the shape-changing shortcut.
    kernel_init: conv kernel initializer.
    widths: optional `(conv1, conv2)` output channels overriding `(features, features)`;
      `conv2`'s is the block's output width.
    downsample: force (True) or forbid (False) the shape-changing shortcut; `None` uses it
      iff the block changes the shape.
    shortcut: 'projection' (option B) or 'zero_pad' (option A).
  """

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    w1, w2 = self.widths or (self.features, self.features)
    y = conv(w1, 3, strides=self.strides, kernel_init=self.kernel_init, name="conv1")(x)
    y = nn.relu(batch_norm(train, name="bn1")(y))
    y = conv(w2, 3, kernel_init=self.kernel_init, name="conv2")(y)
    y = batch_norm(train, name="bn2")(y)
    shortcut = _shortcut(x, w2, self.strides, self.kernel_init, train, self.downsample,
                         self.shortcut)
    return nn.relu(y + shortcut)


class Bottleneck(_ResidualBlock):
  """1x1-3x3-1x1 bottleneck with a residual connection: `[B, H, W, C] -> [B, H/s, W/s, 4 * features]`.

  Computes `relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))` with
  `conv1` 1x1 -> `features`, `conv2` 3x3 -> `features` carrying the stride `s` (torchvision's
  "ResNet v1.5" placement), `conv3` 1x1 -> `4 * features`; `shortcut` as in `BasicBlock`.

  Attributes:
    features: bottleneck width; the block outputs `4 * features` channels.
    strides: stride of `conv2` and of the shape-changing shortcut.
    kernel_init: conv kernel initializer.
    widths: optional `(conv1, conv2, conv3)` output channels overriding
      `(features, features, 4 * features)`; `conv3`'s is the block's output width.
    downsample, shortcut: as in `BasicBlock`.
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
    shortcut = _shortcut(x, w3, self.strides, self.kernel_init, train, self.downsample,
                         self.shortcut)
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
    kernel_init: conv kernel initializer.
    head_kernel_init, head_bias_init: the head's initializers (default: Flax's Dense ones).
    shortcut: 'projection' (option B) or 'zero_pad' (option A), see the module docstring.
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
  head_kernel_init: Initializer = DENSE_INIT
  head_bias_init: Initializer = nn.initializers.zeros_init()
  shortcut: Shortcut = "projection"
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
            downsample=strides != 1 or nominal_in != nominal_out,
            shortcut=self.shortcut,
            name=f"stage{s + 1}_block{b}",
        )
        x = block(x, train=train)
        nominal_in, i = nominal_out, i + 1
    head = nn.Dense(self.num_classes, kernel_init=self.head_kernel_init,
                    bias_init=self.head_bias_init, name="head")
    return head(global_avg_pool(x))


def cifar_resnet(depth: int, num_classes: int, **fields: Any) -> ResNet:
  """Returns the CIFAR ResNet-`depth` (`depth = 6n + 2`): 3 stages of n BasicBlocks, 16/32/64.

  By default option-B shortcuts and He-normal fan-in init, as in the common PyTorch CIFAR
  ResNets (`kaiming_normal_`); `fields` override other `ResNet` fields.
  """
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
  n = (depth - 2) // 6
  return ResNet(num_classes, stage_sizes=(n, n, n), stage_features=(16, 32, 64), **fields)


def resnet20_prospr(num_classes: int) -> ResNet:
  """The ProsPr authors' ResNet-20 (mil-ad/prospr `models/resnet20.py`, Idelbayev's CIFAR ResNet).

  `cifar_resnet(20)` with option-A shortcuts (`zero_pad_shortcut`: no shortcut parameters)
  and their init, `_weights_init`: every conv kernel and the head kernel
  `kaiming_normal_` (plain `N(0, 2 / fan_in)`), the head bias PyTorch's `nn.Linear` default
  `U(-1/8, 1/8)` (fan-in 64), BatchNorm scale 1 and bias 0.

  Parameters: 269,722 with 10 classes, 275,572 with 100 (their `model_factory` builds it for
  CIFAR-10 only; with 100 classes it is their `ResNet(BasicBlock, [3, 3, 3], 100)`).
  """
  return cifar_resnet(
      20, num_classes,
      shortcut="zero_pad",
      kernel_init=torch_init.KAIMING_NORMAL_FAN_IN,
      head_kernel_init=torch_init.KAIMING_NORMAL_FAN_IN,
      head_bias_init=torch_init.default_bias(64),
  )


def resnet18(num_classes: int, **fields: Any) -> ResNet:
  """Returns ResNet-18 for small inputs (CIFAR, Tiny-ImageNet): 3x3 stride-1 stem, no max-pool.

  Stages of 2 BasicBlocks, 64/128/256/512 channels, option-B shortcuts; by default He-normal
  fan-in init (`fields` override other `ResNet` fields). 11,173,962 parameters with 10 classes.
  """
  return ResNet(num_classes, stage_sizes=(2, 2, 2, 2), stage_features=(64, 128, 256, 512),
                **fields)


def resnet18_prospr(num_classes: int) -> ResNet:
  """The ProsPr authors' small-input ResNet-18 (mil-ad/prospr `models/resnet_custom.py`).

  Their `model_factory('resnet18', dataset)` patches torchvision's ResNet-18 layout for
  inputs smaller than ImageNet (CIFAR, Tiny-ImageNet): a 3x3 stride-1 stem conv and no
  max-pool, so on 64x64 Tiny-ImageNet the four stages run at 64/32/16/8. The layers are those
  of `resnet18` (1x1-conv + BN projection shortcuts). Init: their `_initialize_weights` is
  never called, so every layer keeps PyTorch's default: conv and head kernels
  `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, the head bias `U(-1/sqrt(512), 1/sqrt(512))`,
  BatchNorm scale 1 and bias 0.

  Parameters: 11,271,432 with 200 classes (11,173,962 with 10).
  """
  return resnet18(
      num_classes,
      kernel_init=torch_init.DEFAULT_KERNEL,
      head_kernel_init=torch_init.DEFAULT_KERNEL,
      head_bias_init=torch_init.default_bias(512),
  )


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
