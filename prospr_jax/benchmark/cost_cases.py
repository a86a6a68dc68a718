"""The functions the ProsPr cost benchmarks time, jitted, with their arguments: the masked and
the dense training step, full ProsPr for each k, first-order ProsPr and SNIP."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.adapters import LinenLoss
from prospr_jax.benchmark import timing
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.experiment import train_step
from prospr_jax.saliency import prospr_scores, snip_scores
from prospr_jax.saliency.prospr import Unroll
from prospr_jax.tree_types import PyTree

TRAIN_CONFIG = types.SimpleNamespace(
    learning_rate=0.1, lr_schedule="cosine", num_epochs=1, lr_decay_fractions=(0.5, 0.75),
    momentum=0.9, weight_decay=5e-4,
)
"""`train_step.TrainHyperparams` of configs/default.py (the step cost does not depend on them)."""
SPARSITY = 0.9
"""Fraction of weights pruned (at random) in the masks of the masked training step."""


def random_masks(params: PyTree, sparsity: float, seed: int = 0) -> PyTree:
  """Bool masks pruning a random `sparsity` fraction of every prunable (ndim > 1) leaf."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  masks = [jax.random.uniform(k, p.shape) >= sparsity if p.ndim > 1 else jnp.ones(p.shape, bool)
           for k, p in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, masks)


def dense_optimizer(config: train_step.TrainHyperparams,
                    schedule: optax.Schedule) -> optax.GradientTransformation:
  """`train_step.make_optimizer`'s chain without its first element, `keep_masked`."""
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum or None),
  )


def train_states(setup: Setup) -> dict[str, train_step.TrainState]:
  """`{'masked': ..., 'dense': ...}` training states of the same model and masked params."""
  schedule = train_step.learning_rate_schedule(TRAIN_CONFIG, steps_per_epoch=1000)
  masks = random_masks(setup.params, SPARSITY)
  optimizers = {"masked": train_step.make_optimizer(TRAIN_CONFIG, schedule, masks),
                "dense": dense_optimizer(TRAIN_CONFIG, schedule)}
  return {
      name: train_step.TrainState.create(
          apply_fn=setup.model.apply, params=masks_lib.apply_masks(setup.params, masks),
          tx=tx, batch_stats=setup.state.get("batch_stats", {}), masks=masks)
      for name, tx in optimizers.items()
  }


def prospr_fn(
    setup: Setup, k: int, *, first_order: bool = False, remat: bool = False,
    unroll: Unroll | None = None,
) -> Callable[..., PyTree]:
  """Jitted `(params, state, batches) -> prospr_scores` with `k` inner steps in the inner-loop
  form `unroll` (None: the platform's default)."""
  return jax.jit(functools.partial(
      _prospr, loss_fn=setup.loss_fn, k=k, first_order=first_order, remat=remat, unroll=unroll))


def _prospr(params: PyTree, state: PyTree, batches: Sequence[PyTree], *, loss_fn: LinenLoss,
            k: int, first_order: bool, remat: bool, unroll: Unroll | None) -> PyTree:
  """`prospr_scores` with `k` inner steps on `k + 1` batches (the library's default inner SGD)."""
  return prospr_scores(loss_fn, params, batches, state=state, num_steps=k,
                       first_order=first_order, remat=remat, unroll=unroll)


def snip_fn(setup: Setup) -> Callable[..., PyTree]:
  """Jitted `(params, state, batch) -> snip_scores` on one batch."""
  return jax.jit(
      lambda params, state, batch: snip_scores(setup.loss_fn, params, batch, state=state))


def prospr_args(setup: Setup, k: int) -> tuple[PyTree, PyTree, list[PyTree]]:
  """Arguments of `prospr_fn(setup, k)`: params, state and `k + 1` distinct batches."""
  return setup.params, setup.state, setup.batches[: k + 1]


def compile_prospr(setup: Setup, k: int, *, remat: bool = False) -> timing.CompiledCall:
  """Full ProsPr with `k` inner steps (and `remat`), compiled for `prospr_args(setup, k)`."""
  return timing.compile_call(prospr_fn(setup, k, remat=remat), *prospr_args(setup, k))


def reference_k(ks: Sequence[int]) -> int:
  """3 if in `ks`, else the largest k <= 3, else the smallest k."""
  small = [k for k in ks if k <= 3]
  return max(small) if small else min(ks)


def prospr_name(k: int, remat: bool) -> str:
  """The name of the full-ProsPr timing case with `k` inner steps."""
  return f"prospr_k{k}_remat" if remat else f"prospr_k{k}"


def timing_cases(
    setup: Setup, ks: Sequence[int], remat: bool = False, unroll: Unroll | None = None
) -> dict[str, tuple[Callable[..., Any], tuple]]:
  """`{name: (jitted function, args)}`: the two training steps ('train_step_masked',
  'train_step_dense'), full ProsPr (with `remat`, inner loop `unroll`) for each k
  (`prospr_name`), and first-order ProsPr ('prospr_first_order_k<k>') and SNIP ('snip') at the
  reference k."""
  cases = {f"train_step_{name}": (train_step.train_step, (state, setup.batches[0]))
           for name, state in train_states(setup).items()}
  cases |= {prospr_name(k, remat): (prospr_fn(setup, k, remat=remat, unroll=unroll),
                                    prospr_args(setup, k))
            for k in ks}
  k_ref = reference_k(ks)
  cases[f"prospr_first_order_k{k_ref}"] = (
      prospr_fn(setup, k_ref, first_order=True), prospr_args(setup, k_ref))
  cases["snip"] = (snip_fn(setup), (setup.params, setup.state, setup.batches[0]))
  return cases
