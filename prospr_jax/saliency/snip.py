"""Connection sensitivity: SNIP (Lee et al. 2019), iterative SNIP and FORCE (de Jorge et al.
2021)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree, StatefulLossFn

SelectFn = Callable[..., PyTree]
"""`select(scores, sparsity, eligible=None) -> bool masks`, e.g. a partial of
`masks_from_scores`."""


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def connection_sensitivity(
    params: PyTree, state: PyTree, batch: PyTree, masks: PyTree, *, loss_fn: StatefulLossFn
) -> PyTree:
  """`∂L(c ⊙ θ)/∂c` at `c = masks`, i.e. `θ ⊙ ∇w L(w)` at `w = masks ⊙ θ` (signed).

  Each leaf is summed over the axes its mask broadcasts along, so per-channel masks get
  per-channel sensitivities.
  """
  grads, _ = jax.grad(loss_fn, has_aux=True)(objective.masked(params, masks), state, batch)
  return jax.tree.map(
      lambda p, g, m: objective.reduce_to(p * g, m.shape), params, grads, masks
  )


def _mean_abs_sensitivity(loss_fn, params, state, batches, masks) -> PyTree:
  """`|mean over batches of connection_sensitivity|`."""
  sens = [connection_sensitivity(params, state, b, masks, loss_fn=loss_fn) for b in batches]
  return jax.tree.map(abs, objective.mean_tree(sens))


def snip_scores(
    loss_fn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    *,
    state: PyTree | None = None,
) -> PyTree:
  """SNIP saliency `|θ ⊙ ∇θ L|`, with the gradient averaged over `batches`.

  Args mirror `prospr_scores`.
  """
  loss_fn, state = objective.with_state(loss_fn, state)
  ones = masks_lib.ones_masks(params)
  return _mean_abs_sensitivity(loss_fn, params, state, objective.as_batch_list(batches), ones)


def kept_fraction_schedule(sparsity: float, num_rounds: int) -> list[float]:
  """Sparsity after each of `num_rounds` rounds: kept fraction `(1 - sparsity)^(t / T)`,
  t = 1..T."""
  if num_rounds < 1:
    raise ValueError(f"num_rounds={num_rounds} must be >= 1.")
  return [1.0 - (1.0 - sparsity) ** (t / num_rounds) for t in range(1, num_rounds + 1)]


def gradual_sensitivity_masks(
    loss_fn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    sparsity: float,
    select: SelectFn,
    *,
    state: PyTree | None = None,
    num_rounds: int = 60,
    allow_regrowth: bool,
) -> PyTree:
  """Prunes over `num_rounds` rounds, re-scoring `|θ ⊙ ∇L(m ⊙ θ)|` at the current mask `m`.

  `allow_regrowth=False` is iterative SNIP (pruned weights stay pruned); True is FORCE (all
  weights compete again each round). Returns bool masks at `sparsity`.
  """
  loss_fn, state = objective.with_state(loss_fn, state)
  batches = objective.as_batch_list(batches)
  current = masks_lib.ones_masks(params, dtype=bool)
  for round_sparsity in kept_fraction_schedule(sparsity, num_rounds):
    scores = _mean_abs_sensitivity(loss_fn, params, state, batches, current)
    current = select(scores, round_sparsity, eligible=None if allow_regrowth else current)
  return current


iterative_snip_masks = functools.partial(gradual_sensitivity_masks, allow_regrowth=False)
force_masks = functools.partial(gradual_sensitivity_masks, allow_regrowth=True)
