"""GraSP (Wang et al., ICLR 2020): keep the weights that preserve gradient flow."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax

from prospr_jax.saliency import objective
from prospr_jax.saliency.objective import PyTree, StatefulLossFn


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def loss_gradient(params: PyTree, state: PyTree, batch: PyTree, *, loss_fn: StatefulLossFn) -> PyTree:
  """`g = ∇θ L(θ; batch)`."""
  return jax.grad(loss_fn, has_aux=True)(params, state, batch)[0]


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def hessian_vector_product(
    params: PyTree, state: PyTree, batch: PyTree, vector: PyTree, *, loss_fn: StatefulLossFn
) -> PyTree:
  """`H v` with `H = ∇²θ L(θ; batch)`, forward-over-reverse (`jvp` of `grad`)."""
  grad_fn = lambda p: loss_gradient(p, state, batch, loss_fn=loss_fn)
  return jax.jvp(grad_fn, (params,), (vector,))[1]


def grasp_scores(
    loss_fn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    *,
    state: PyTree | None = None,
) -> PyTree:
  """GraSP scores `θ ⊙ (H g)` (signed); higher = keep.

  The GraSP paper scores `S = -θ ⊙ Hg` and removes the weights with the largest `S`; keeping
  the largest `θ ⊙ Hg` is the same selection. As in the authors' code, `g` is averaged over
  `batches` in a first pass and `Hg` over the same batches in a second. Their loss divides the
  logits by a temperature of 200: build `loss_fn` with it (`linen_loss_fn(model,
  temperature=200.)`).
  """
  loss_fn, state = objective.with_state(loss_fn, state)
  batches = objective.as_batch_list(batches)
  g = objective.mean_tree([loss_gradient(params, state, b, loss_fn=loss_fn) for b in batches])
  hg = objective.mean_tree(
      [hessian_vector_product(params, state, b, g, loss_fn=loss_fn) for b in batches]
  )
  return jax.tree.map(lambda p, h: p * h, params, hg)
