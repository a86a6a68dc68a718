"""Thin adapters from Flax models to the plain-JAX objectives the criteria use.

Batches are dicts `{'image': float [B, ...], 'label': int [B]}`; linen models are called as
`model.apply(variables, x, train=...)` with BatchNorm statistics in `batch_stats`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import optax

PyTree = Any


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of `logits [B, C]` against integer `labels [B]`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class LinenLoss:
  """`loss_fn(params, state, batch) -> (loss, new_state)` for a linen classifier.

  With `train=True` the model runs in training mode (BatchNorm uses batch statistics) and the
  new `state` (every non-`params` collection, e.g. `{'batch_stats': ...}`) is returned; the
  caller's state is not modified. Logits are divided by `temperature` (GraSP uses 200).
  Frozen, so equal setups hash equal and jitted criteria compile once per setup.
  """

  model: nn.Module
  train: bool = True
  temperature: float = 1.0

  def __call__(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[jax.Array, PyTree]:
    variables = {"params": params, **state}
    if self.train and state:
      logits, new_state = self.model.apply(
          variables, batch["image"], train=True, mutable=list(state)
      )
    else:
      logits, new_state = self.model.apply(variables, batch["image"], train=self.train), state
    return cross_entropy(logits / self.temperature, batch["label"]), new_state


class LinenApply:
  """`apply_fn(params, x) -> logits` in eval mode with fixed `state` (for SynFlow).

  The state's leaves are cast to the params' dtype, so scoring in float64 works.
  """

  def __init__(self, model: nn.Module, state: PyTree):
    self.model = model
    self.state = state

  def __call__(self, params: PyTree, x: jax.Array) -> jax.Array:
    dtype = jax.tree.leaves(params)[0].dtype
    state = jax.tree.map(lambda s: s.astype(dtype), self.state)
    return self.model.apply({"params": params, **state}, x, train=False)
