"""GraSP (Wang et al., ICLR 2020): keep the weights that preserve gradient flow."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree, StatefulLossFn


def restrict(tree: PyTree, prunable: tuple[bool, ...]) -> PyTree:
  """`tree` with its i-th leaf (in `jax.tree.leaves` order) zeroed unless `prunable[i]`."""
  leaves, treedef = jax.tree.flatten(tree)
  kept = [x if keep else jnp.zeros_like(x) for x, keep in zip(leaves, prunable, strict=True)]
  return jax.tree.unflatten(treedef, kept)


@functools.partial(jax.jit, static_argnames=("loss_fn", "prunable"))
def loss_gradient(
    params: PyTree,
    state: PyTree,
    batch: PyTree,
    *,
    loss_fn: StatefulLossFn,
    prunable: tuple[bool, ...],
) -> PyTree:
  """`g = ∇w L(θ; batch)` over the prunable leaves `w` of `θ`; zeros on the other leaves."""
  return restrict(jax.grad(loss_fn, has_aux=True)(params, state, batch)[0], prunable)


@functools.partial(jax.jit, static_argnames=("loss_fn", "prunable"))
def hessian_vector_product(
    params: PyTree,
    state: PyTree,
    batch: PyTree,
    vector: PyTree,
    *,
    loss_fn: StatefulLossFn,
    prunable: tuple[bool, ...],
) -> PyTree:
  """`H v` with `H = ∇²w L(θ; batch)`, the Hessian block of the prunable leaves `w` only.

  `vector` must be zero on the other leaves; they are constants of the product (forward-over-
  reverse: `jvp` of `grad`, then restricted to the prunable leaves).
  """
  grad_fn = lambda p: loss_gradient(p, state, batch, loss_fn=loss_fn, prunable=prunable)
  return jax.jvp(grad_fn, (params,), (vector,))[1]


def grasp_scores(
    loss_fn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    *,
    state: PyTree | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> PyTree:
  """GraSP scores `w ⊙ (H g)` (signed) on the prunable leaves `w`; higher = keep.

  As in the authors' code (alecwangcq/GraSP `GraSP.py`, and Synaptic-Flow's `GraSP` pruner),
  `g = ∇w L` and `H = ∇²w L` are taken with respect to the prunable weights only (the leaves
  `filter_fn` chooses: conv and dense kernels by default); biases, BatchNorm scales and the
  other leaves are constants, and their scores are zero. The GraSP paper scores
  `S = -θ ⊙ Hg` and removes the weights with the largest `S`; keeping the largest `θ ⊙ Hg`
  is the same selection. `g` is averaged over `batches` in a first pass and `Hg` over the same
  batches in a second. Their loss divides the logits by a temperature of 200: build
  `loss_fn` with it (`LinenLoss(model, temperature=200.)`).
  """
  loss_fn, state = objective.with_state(loss_fn, state)
  batches = objective.as_batch_list(batches)
  prunable = tuple(jax.tree.leaves(masks_lib.prunable_tree(params, filter_fn)))
  if not any(prunable):
    raise ValueError("filter_fn marks no leaf of params as prunable; GraSP has nothing to score.")
  gradient = functools.partial(loss_gradient, loss_fn=loss_fn, prunable=prunable)
  g = objective.mean_tree([gradient(params, state, b) for b in batches])
  hvp = functools.partial(hessian_vector_product, loss_fn=loss_fn, prunable=prunable)
  hg = objective.mean_tree([hvp(params, state, b, g) for b in batches])
  return jax.tree.map(lambda p, h: p * h, params, hg)
