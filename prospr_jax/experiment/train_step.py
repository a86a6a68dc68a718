"""The masked training step, its optimizer and the evaluation step, with no I/O: no TF, tfds or
ml-collections.

`prospr_jax.experiment.train` (the training loop), `prospr_jax.experiment.population` and the
benchmarks share these, so that timing the training step needs only jax, flax and optax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from prospr_jax.adapters import cross_entropy
from prospr_jax.transform import keep_masked
from prospr_jax.tree_types import PyTree



class TrainHyperparams(Protocol):
  """The fields of `config.train` that the schedule and the optimizer read."""

  learning_rate: float
  lr_schedule: str  # 'cosine' or 'step'
  num_epochs: int
  lr_decay_fractions: Sequence[float]
  momentum: float
  weight_decay: float


class TrainState(train_state.TrainState):
  """Params, optimizer state, BatchNorm statistics and the bool mask pytree."""

  batch_stats: PyTree
  masks: PyTree


def learning_rate_schedule(config: TrainHyperparams, steps_per_epoch: int) -> optax.Schedule:
  """Cosine decay, or step decay x0.1 at `lr_decay_fractions` of training (the paper's)."""
  total = config.num_epochs * steps_per_epoch
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, total)
  if config.lr_schedule == "step":
    boundaries = {int(f * total): 0.1 for f in config.lr_decay_fractions}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}; choose 'cosine' or 'step'.")


def make_optimizer(
    config: TrainHyperparams, schedule: optax.Schedule, masks: PyTree
) -> optax.GradientTransformation:
  """keep_masked -> L2 weight decay -> SGD with momentum: pruned weights stay exactly zero."""
  return optax.chain(
      keep_masked(masks),
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum or None),
  )


@jax.jit
def train_step(state: TrainState, batch: PyTree) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on `batch`; returns the new state and `{'loss', 'accuracy'}` of the batch."""

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"],
    )
    return cross_entropy(logits, batch["label"]), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return state, {"loss": loss, "accuracy": accuracy}


@jax.jit
def eval_step(state: TrainState, batch: PyTree) -> dict[str, jax.Array]:
  """Sums over the real examples of `batch` (its 'mask'): count, loss, top-1 and top-5 hits."""
  logits = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
  )
  weight = batch["mask"].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return {
      "count": weight.sum(),
      "loss": (losses * weight).sum(),
      "top1": ((jnp.argmax(logits, -1) == batch["label"]) * weight).sum(),
      "top5": ((top5 == batch["label"][:, None]).any(-1) * weight).sum(),
  }
