"""Thin adapters from Flax models to the plain-JAX objectives the criteria use.

Batches are dicts `{'image': float [B, ...], 'label': int [B]}`; linen models are called as
`model.apply(variables, x, train=...)` with BatchNorm statistics in `batch_stats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import flax.linen as nn
import jax
import optax

from prospr_jax.tree_types import PyTree

BatchNormMode = Literal["train", "eval"]
"""How BatchNorm runs while a criterion scores: 'train' normalizes with each batch's statistics,
'eval' with the running statistics in the model state (at initialization mean 0, variance 1)."""
BATCHNORM_MODES: tuple[BatchNormMode, ...] = ("train", "eval")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of `logits [B, C]` against integer `labels [B]`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


BATCH_KEYS = ("image", "label")
"""The keys of a batch that `LinenLoss` reads."""


def check_batch(batch: PyTree) -> None:
  """Raises TypeError unless `batch` is a mapping, ValueError naming the expected keys and the
  given ones unless it holds every key of `BATCH_KEYS`."""
  if not isinstance(batch, Mapping):
    raise TypeError(f"A batch must be a dict with keys {list(BATCH_KEYS)} (images [B, ...], "
                    f"integer labels [B]); got a {type(batch).__name__}.")
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"A batch must have the keys {list(BATCH_KEYS)} (images [B, ...], integer "
                     f"labels [B]); this one has {list(batch)}, without {missing}.")


def check_batchnorm_mode(bn_mode: str) -> None:
  if bn_mode not in BATCHNORM_MODES:
    raise ValueError(f"Unknown BatchNorm mode {bn_mode!r}; choose one of {BATCHNORM_MODES}.")


def apply_linen(
    model: nn.Module, params: PyTree, state: PyTree, x: jax.Array, bn_mode: BatchNormMode
) -> tuple[jax.Array, PyTree]:
  """`(model outputs, new state)` of `model` on `x` with BatchNorm in `bn_mode`.

  'train': BatchNorm uses the statistics of `x`, and the state's collections (e.g.
  `batch_stats`) come back updated; 'eval': the running statistics in `state` are used and
  `state` comes back as it is. `state` itself is never modified.
  """
  variables = {"params": params, **state}
  if bn_mode == "train" and state:
    return model.apply(variables, x, train=True, mutable=list(state))
  return model.apply(variables, x, train=bn_mode == "train"), state


@dataclasses.dataclass(frozen=True)
class LinenLoss:
  """`loss_fn(params, state, batch) -> (loss, new_state)` for a linen classifier.

  `bn_mode` ('train' or 'eval') is how BatchNorm runs while scoring (see `apply_linen`); the
  registry's `METHODS[name].batchnorm_mode` is the mode of each method's authors' code. Logits
  are divided by `temperature` (GraSP uses 200). Frozen, so equal setups hash equal and jitted
  criteria compile once per setup.
  """

  model: nn.Module
  bn_mode: BatchNormMode = "train"
  temperature: float = 1.0

  def __post_init__(self):
    check_batchnorm_mode(self.bn_mode)

  def __call__(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[jax.Array, PyTree]:
    check_batch(batch)
    logits, new_state = apply_linen(self.model, params, state, batch["image"], self.bn_mode)
    return cross_entropy(logits / self.temperature, batch["label"]), new_state


class LinenApply:
  """`apply_fn(params, x) -> logits` with fixed `state` (for SynFlow), BatchNorm in `bn_mode`.

  SynFlow's authors score in 'eval' mode (the default). The state's leaves are cast to the
  params' dtype, so scoring in float64 works.
  """

  def __init__(self, model: nn.Module, state: PyTree, bn_mode: BatchNormMode = "eval"):
    check_batchnorm_mode(bn_mode)
    self.model = model
    self.state = state
    self.bn_mode = bn_mode

  def __call__(self, params: PyTree, x: jax.Array) -> jax.Array:
    dtype = jax.tree.leaves(params)[0].dtype
    state = jax.tree.map(lambda s: s.astype(dtype), self.state)
    return apply_linen(self.model, params, state, x, self.bn_mode)[0]
