"""NTK-SAP (Wang et al., ICLR 2023): data-free pruning that keeps the NTK's trace.

Each round scores every weight by how much the network's output moves under a small random
perturbation of the weights (a finite-difference estimate of the trace of the neural tangent
kernel), on fresh weights and Gaussian-noise inputs:

    score = | Σ_s ∂/∂c ||f(x_s; c ⊙ θ_s) − f(x_s; c ⊙ (θ_s + ε Δ_s))||² |  at c = m,   times (m ≠ 0)

with, for each draw s (of `num_samples × num_batches` per round), weights `θ_s` re-drawn from
the initialization, inputs `x_s ~ N(0, I)` shaped like a data batch and `Δ_s ~ N(0, I)` on the
prunable weights. Rounds prune to kept fraction `(1 − sparsity)^(t / T)`.

Follows the authors' code (YiteWang/NTK-SAP, `Pruners/pruners.py`, class `NTKSAP`, and
`prune.py`'s `prune_loop`); where it departs from the paper the code is followed:
  * the score is the absolute value of the gradient summed over all draws (not a sum of
    per-draw absolute values);
  * BatchNorm: before each draw the running statistics are reset and set by one train-mode
    pass of the unperturbed masked network over `x_s` with momentum 1 (so they are `x_s`'s
    batch statistics, variance unbiased, as PyTorch stores it), then both networks run in
    eval mode on those statistics, which are constants of the gradient; the perturbed network
    reuses the unperturbed one's statistics;
  * the re-draw (`model._initialize_weights()`) draws conv and linear weights from
    kaiming-normal (fan-in, gain √2) and resets BatchNorm's scale and shift to 1 and 0; biases
    keep their values. `kaiming_normal_redraw` does the same (it leaves every non-prunable leaf
    as it is, which at initialization includes BatchNorm's 1 and 0).
The authors' CIFAR script (`scripts/run.sh`) uses T = 20 prune epochs, R = 5 (`--ntksap_R`),
ε = 0.01 (`--ntksap_epsilon` default) and a pruning set of 10 examples per class in batches of
256, i.e. one noise batch of 100 inputs per draw on CIFAR-10: the defaults here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.saliency.batch_statistics import CalibrateFn
from prospr_jax.saliency.precision import float64_scope
from prospr_jax.saliency.snip import SelectFn, kept_fraction_schedule
from prospr_jax.tree_types import PyTree

StatefulApplyFn = Callable[[PyTree, PyTree, jax.Array], jax.Array]
"""`apply_fn(params, state, x) -> outputs` with BatchNorm in eval mode (running statistics in
`state`), e.g. `as_pure_model(...)[0].apply`; a plain `apply_fn(params, x)` becomes one with
`prospr_jax.pure_models.FunctionApply` and `state={}`."""
InitFn = Callable[[jax.Array], PyTree]
"""`init_fn(key) -> params`: a fresh draw of the params (same tree and shapes)."""


class NtkSapDraws(NamedTuple):
  """The random draws of one round, stacked on a leading axis of `S` draws.

  Attributes:
    params: re-drawn params, each leaf `[S, *leaf.shape]`.
    inputs: Gaussian-noise inputs `[S, batch_size, *input_shape]`.
    perturbations: `Δ`, each leaf `[S, *leaf.shape]`: standard normal on the prunable leaves,
      zero on the others.
  """

  params: PyTree
  inputs: jax.Array
  perturbations: PyTree


def kaiming_normal_redraw(
    params: PyTree, filter_fn: masks_lib.FilterFn = masks_lib.default_filter
) -> InitFn:
  """`init_fn(key)` drawing each prunable leaf from `N(0, 2 / fan_in)` (PyTorch's
  `kaiming_normal_`), `fan_in = prod(shape[:-1])` for Flax's `[..., in, out]` kernels (conv
  `HWIO`, dense `[in, out]`); every other leaf keeps its value in `params`."""
  prunable = masks_lib.prunable_tree(params, filter_fn)
  leaves, treedef = jax.tree.flatten(params)
  flags = jax.tree.leaves(prunable)

  def init_fn(key: jax.Array) -> PyTree:
    keys = jax.random.split(key, len(leaves))
    drawn = [
        jax.random.normal(k, p.shape, p.dtype) * math.sqrt(2.0 / math.prod(p.shape[:-1]))
        if flag else p
        for k, p, flag in zip(keys, leaves, flags)
    ]
    return jax.tree.unflatten(treedef, drawn)

  return init_fn


def draw_round(
    key: jax.Array,
    params: PyTree,
    *,
    init_fn: InitFn,
    input_shape: Sequence[int],
    batch_size: int,
    num_draws: int,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> NtkSapDraws:
  """`num_draws` independent draws of weights, noise inputs (in the params' dtype) and
  perturbations from `key`."""
  prunable = masks_lib.prunable_tree(params, filter_fn)
  dtype = jax.tree.leaves(params)[0].dtype

  def draw(k: jax.Array) -> NtkSapDraws:
    k_init, k_input, k_delta = jax.random.split(k, 3)
    leaves, treedef = jax.tree.flatten(params)
    deltas = [
        jax.random.normal(kd, p.shape, p.dtype) if flag else jnp.zeros_like(p)
        for kd, p, flag in zip(jax.random.split(k_delta, len(leaves)), leaves,
                               jax.tree.leaves(prunable))
    ]
    return NtkSapDraws(
        init_fn(k_init),
        jax.random.normal(k_input, (batch_size, *input_shape), dtype),
        jax.tree.unflatten(treedef, deltas),
    )

  return jax.vmap(draw)(jax.random.split(key, num_draws))


def _output_gap(c: PyTree, theta: PyTree, perturbed: PyTree, state: PyTree, x: jax.Array,
                apply_fn: StatefulApplyFn) -> jax.Array:
  """`||f(x; c ⊙ θ) − f(x; c ⊙ θ')||²`, summed over the batch."""
  gap = apply_fn(objective.masked(theta, c), state, x) - apply_fn(
      objective.masked(perturbed, c), state, x)
  return jnp.sum(gap**2)


@functools.partial(jax.jit, static_argnames=("apply_fn", "calibrate_fn"))
def ntk_sap_scores(
    draws: NtkSapDraws,
    masks: PyTree,
    state: PyTree,
    epsilon: float,
    *,
    apply_fn: StatefulApplyFn,
    calibrate_fn: CalibrateFn | None,
) -> PyTree:
  """One round of NTK-SAP scores at the current `masks` (module docstring), one `lax.scan`
  step per draw.

  Args:
    draws: the round's draws (`draw_round`, or any arrays of that layout).
    masks: current masks (bool or float), broadcastable to the params.
    state: model state (e.g. `{'batch_stats': ...}`; `{}` for none).
    epsilon: perturbation size `ε`.
    apply_fn: `apply_fn(params, state, x) -> outputs` in eval mode.
    calibrate_fn: sets BatchNorm statistics from each draw's input before it is scored
      (`prospr_jax.saliency.batch_statistics`); None keeps `state` (no BatchNorm).

  Returns:
    Scores with the structure of the params and the masks' leaf shapes; pruned entries 0.
  """
  c = jax.tree.map(lambda m, p: jnp.asarray(m, p.dtype),
                   masks, jax.tree.map(lambda d: d[0], draws.params))

  def add_draw(total: PyTree, draw: NtkSapDraws) -> tuple[PyTree, None]:
    theta, x, delta = draw
    draw_state = state if calibrate_fn is None else jax.lax.stop_gradient(
        calibrate_fn(objective.masked(theta, c), state, x))
    perturbed = jax.tree.map(lambda p, d: p + epsilon * d, theta, delta)
    grads = jax.grad(_output_gap)(c, theta, perturbed, draw_state, x, apply_fn)
    return jax.tree.map(jnp.add, total, grads), None

  total, _ = jax.lax.scan(add_draw, jax.tree.map(jnp.zeros_like, c), draws)
  return jax.tree.map(lambda g, m: jnp.abs(g) * (m != 0), total, c)


def ntk_sap_masks(
    apply_fn: StatefulApplyFn,
    params: PyTree,
    input_shape: Sequence[int],
    sparsity: float,
    select: SelectFn,
    *,
    key: jax.Array | None = None,
    state: PyTree | None = None,
    calibrate_fn: CalibrateFn | None = None,
    init_fn: InitFn | None = None,
    num_rounds: int = 20,
    num_samples: int = 5,
    num_batches: int = 1,
    batch_size: int = 100,
    epsilon: float = 0.01,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
    float64: bool = False,
    round_draws: Callable[[int], NtkSapDraws] | None = None,
) -> PyTree:
  """Iterative NTK-SAP: `num_rounds` rounds of scoring (`ntk_sap_scores`) and pruning the
  lowest scores, kept fraction `(1 − sparsity)^(t / T)` after round t. Returns bool masks.

  Args:
    apply_fn: `apply_fn(params, state, x) -> outputs` with BatchNorm in eval mode.
    params: params of the right tree, shapes and dtype (their values matter only for the
      leaves `init_fn` keeps, e.g. biases under the default).
    input_shape: one example's input shape, e.g. `(32, 32, 3)`.
    sparsity: final fraction of prunable weights removed.
    select: `select(scores, sparsity, eligible=None) -> masks`.
    key: PRNG key of all draws (round t uses `fold_in(key, t)`); needed unless `round_draws`.
    state: model state such as `{'batch_stats': ...}` (None: `{}`); never modified.
    calibrate_fn: BatchNorm calibration before each draw (`batch_statistics_for(apply_fn)`;
      `LinenBatchStatistics(model)` for linen); None for a model without BatchNorm.
    init_fn: `init_fn(key) -> params`, the weight re-draw; None: `kaiming_normal_redraw`
      (the authors'). Pass the model's own init to re-draw all params from it instead.
    num_rounds: T (authors' CIFAR script: 20).
    num_samples: R, weight re-draws per round (authors' CIFAR-10 script: 5).
    num_batches: noise batches per re-draw (the authors' pruning set: 1 on CIFAR).
    batch_size: inputs per noise batch (authors: 10 per class, i.e. 100 on CIFAR-10).
    epsilon: ε, the perturbation's scale (authors: 0.01).
    filter_fn: the prunable leaves (perturbed, re-drawn by the default `init_fn`).
    float64: score in float64.
    round_draws: `round_draws(t) -> NtkSapDraws` replacing the random draws of round t
      (t = 0..T-1), e.g. to replay another implementation's random numbers.
  """
  if key is None and round_draws is None:
    raise ValueError("ntk_sap_masks draws random weights and inputs: pass key= (a PRNG key).")
  with float64_scope(float64) as cast:
    params, state = cast(params), cast({} if state is None else state)
    redraw = kaiming_normal_redraw(params, filter_fn) if init_fn is None else init_fn
    current = masks_lib.ones_masks(params, dtype=bool)
    for t, round_sparsity in enumerate(kept_fraction_schedule(sparsity, num_rounds)):
      draws = round_draws(t) if round_draws is not None else draw_round(
          jax.random.fold_in(key, t), params, init_fn=redraw, input_shape=tuple(input_shape),
          batch_size=batch_size, num_draws=num_samples * num_batches, filter_fn=filter_fn)
      scores = ntk_sap_scores(cast(draws), current, state, epsilon, apply_fn=apply_fn,
                              calibrate_fn=calibrate_fn)
      current = select(scores, round_sparsity, eligible=current)
  return current
