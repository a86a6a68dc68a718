"""SynFlow (Tanaka et al., NeurIPS 2020): data-free, iterative synaptic-flow pruning."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree
from prospr_jax.saliency.snip import SelectFn, kept_fraction_schedule

ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
"""`apply_fn(params, x) -> outputs`, with any BatchNorm in eval mode."""


@functools.partial(jax.jit, static_argnames=("apply_fn", "input_shape"))
def synflow_scores(
    params: PyTree, masks: PyTree, *, apply_fn: ApplyFn, input_shape: tuple[int, ...]
) -> PyTree:
  """One round of SynFlow scores `|w ⊙ ∂R/∂w|` with `w = masks ⊙ |θ|`.

  `R = sum(apply_fn(w, 1))` for one all-ones input of shape `(1, *input_shape)` in the params'
  dtype. Pruned weights score 0.
  """
  w = objective.masked(jax.tree.map(jnp.abs, params), masks)
  dtype = jax.tree.leaves(params)[0].dtype
  x = jnp.ones((1, *input_shape), dtype)
  grads = jax.grad(lambda p: jnp.sum(apply_fn(p, x)))(w)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), w, grads)


def synflow_masks(
    apply_fn: ApplyFn,
    params: PyTree,
    input_shape: Sequence[int],
    sparsity: float,
    select: SelectFn,
    *,
    num_rounds: int = 100,
    float64: bool = False,
) -> PyTree:
  """Iterative SynFlow: `num_rounds` rounds of re-scoring and re-masking, with kept fraction
  `(1 - sparsity)^(t / T)` after round t. Returns bool masks at `sparsity`.

  Args:
    apply_fn: `apply_fn(params, x) -> outputs`; BatchNorm must be in eval mode (at init its
      running statistics make it an affine map, as in the SynFlow paper).
    params: initial params (any float dtype).
    input_shape: one example's input shape, e.g. `(28, 28, 1)`.
    sparsity: final fraction of prunable weights removed.
    select: `select(scores, sparsity, eligible=None) -> masks`.
    num_rounds: number of prune rounds (paper: 100).
    float64: score in float64 (scores span many orders of magnitude and underflow in float32
      for deep nets).
  """
  precision = jax.enable_x64(True) if float64 else contextlib.nullcontext()
  with precision:
    if float64:
      params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    current = masks_lib.ones_masks(params, dtype=bool)
    for round_sparsity in kept_fraction_schedule(sparsity, num_rounds):
      scores = synflow_scores(
          params, current, apply_fn=apply_fn, input_shape=tuple(input_shape)
      )
      current = select(scores, round_sparsity, eligible=current)
  return current
