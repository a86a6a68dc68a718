"""A freshly initialized zoo model with random batches: what every ProsPr benchmark measures on.

Timing and compiled memory do not depend on the data, so the batches are synthetic:
standard-normal images and uniform integer labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prospr_jax import models
from prospr_jax.adapters import LinenLoss
from prospr_jax.tree_types import PyTree

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10_resnet20": {"model_name": "resnet20_prospr", "input_shape": (32, 32, 3),
                         "num_classes": 10},
    "cifar10_vgg16": {"model_name": "vgg16_prospr", "input_shape": (32, 32, 3), "num_classes": 10},
    "tinyimagenet_resnet18": {"model_name": "resnet18_prospr", "input_shape": (64, 64, 3),
                              "num_classes": 200},
    "fashion_mnist_small_convnet": {"model_name": "small_convnet", "input_shape": (28, 28, 1),
                                    "num_classes": 10},
}
"""The paper's settings (named like their configs/, on the authors' networks) and the project's
default CPU setting: `make_setup` (and `cost_suite.run_benchmark`) keyword arguments."""


@dataclasses.dataclass(frozen=True)
class Setup:
  """A freshly initialized model with synthetic data, shared by all measurements."""

  model: nn.Module
  params: PyTree
  state: PyTree  # non-params collections, e.g. {'batch_stats': ...}; {} for none
  batches: list[PyTree]  # enough distinct batches for the largest k (k + 1 each)
  loss_fn: LinenLoss


def make_setup(
    model_name: str,
    batch_size: int,
    input_shape: Sequence[int],
    num_classes: int,
    num_batches: int,
    seed: int = 0,
) -> Setup:
  """Initializes `model_name` and draws `num_batches` random `{'image': [batch_size,
  *input_shape] float32, 'label': [batch_size] int32}` batches."""
  model = models.get_model(model_name, num_classes)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = models.init_variables(model, init_key, tuple(input_shape))
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  batches = [_random_batch(key, batch_size, input_shape, num_classes)
             for key in jax.random.split(data_key, num_batches)]
  return Setup(model, params, state, batches, LinenLoss(model))


def _random_batch(
    key: jax.Array, batch_size: int, input_shape: Sequence[int], num_classes: int
) -> dict[str, jax.Array]:
  """A batch of standard-normal images and uniform integer labels."""
  image_key, label_key = jax.random.split(key)
  return {"image": jax.random.normal(image_key, (batch_size, *input_shape), jnp.float32),
          "label": jax.random.randint(label_key, (batch_size,), 0, num_classes)}
