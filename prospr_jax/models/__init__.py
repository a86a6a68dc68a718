"""Model zoo: Flax linen classifiers for pruning-at-initialization experiments.

Every model is a `flax.linen.Module` called as `model.apply(variables, x, train=...)` on
float32 NHWC images `[batch, height, width, channels]` and returns logits
`[batch, num_classes]`; the input size is taken from the data at `init`. The classifier is
the Dense layer named `head` (`params/head/kernel`); conv and dense kernels are the only
parameters with `ndim > 1`. BatchNorm statistics live in the `batch_stats` collection.

`resnet20_prospr`, `vgg16_prospr` and `resnet18_prospr` are the networks of the ProsPr
authors' code (mil-ad/prospr), layers and init distributions included, which the paper
configs train; `resnet20`, `vgg16` and `resnet18` are this zoo's variants (option-B
shortcuts, five pools and bias-free convs, He-normal fan-in init).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from prospr_jax.models.convnet import LeNet5, SmallConvNet
from prospr_jax.models.mlp import LeNet300100
from prospr_jax.models.resnet import (
    BasicBlock, Bottleneck, ResNet, cifar_resnet, resnet18, resnet18_prospr, resnet20_prospr,
    resnet50)
from prospr_jax.models.vgg import VGG, VGG_CONFIGS, vgg16_prospr

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "lenet300100": LeNet300100,
    "lenet5": LeNet5,
    "small_convnet": SmallConvNet,
    **{name: functools.partial(VGG, config=config) for name, config in VGG_CONFIGS.items()},
    "vgg16_prospr": vgg16_prospr,
    "resnet20": functools.partial(cifar_resnet, 20),
    "resnet20_prospr": resnet20_prospr,
    "resnet32": functools.partial(cifar_resnet, 32),
    "resnet56": functools.partial(cifar_resnet, 56),
    "resnet18": resnet18,
    "resnet18_prospr": resnet18_prospr,
    "resnet50": resnet50,
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by `get_model`."""


def get_model(name: str, num_classes: int) -> nn.Module:
  """Returns the (unbound) model called `name` with a `num_classes`-way `head`.

  Raises:
    ValueError: if `name` is not one of `MODEL_NAMES`.
  """
  try:
    constructor = _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}") from None
  return constructor(num_classes=num_classes)


def init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
  """`model.init(key, zeros[1, *image_shape], train=False)`, compiled as one XLA program.

  Returns the variables dict (`params`, and `batch_stats` for models with BatchNorm).
  Unjitted, `init` dispatches and compiles every initializer op one by one (seconds for a
  small CNN on CPU).
  """
  return jax.jit(
      lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  )(key)


__all__ = [
    "MODEL_NAMES",
    "VGG",
    "VGG_CONFIGS",
    "BasicBlock",
    "Bottleneck",
    "LeNet300100",
    "LeNet5",
    "ResNet",
    "SmallConvNet",
    "get_model",
    "init_variables",
]
