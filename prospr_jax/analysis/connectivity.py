"""Effective sparsity: which kept weights lie on a path from the input to the output.

Vysogorets & Kempe (JMLR 2023, "Connectivity matters: neural network pruning through the lens
of effective sparsity"): at extreme sparsity many kept weights are cut off from the input or
from the output by empty neighbours; they cannot affect the network's function. This module
finds them for any JAX model given `apply_fn(params, x)` (eval mode), at initialization.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree

ApplyFn = Callable[[PyTree, jax.Array], jax.Array]


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _path_flow(weights: PyTree, x: jax.Array, *, apply_fn: ApplyFn) -> PyTree:
  """`w ⊙ ∂R/∂w` with `R = sum(apply_fn(w, x))`, leaf by leaf."""
  grads = jax.grad(lambda w: jnp.sum(apply_fn(w, x)))(weights)
  return jax.tree.map(jnp.multiply, weights, grads)


def effective_masks(
    masks: PyTree,
    params: PyTree,
    *,
    apply_fn: ApplyFn,
    input_shape: Sequence[int],
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> PyTree:
  """Bool masks of the kept prunable weights that lie on some input-to-output path.

  Computed in float64 on the "path network": every prunable leaf replaced by its 0/1 mask,
  every other leaf by `|θ|` (BatchNorm scales, biases), input all ones. With non-negative
  weights and ReLU-type activations every activation is a non-negative sum over paths, and
  `w ⊙ ∂R/∂w` (`R` the sum of the outputs) is positive exactly for the weights that lie on a
  path carrying signal to the output. Biases also carry signal, but not from the input, so
  the same flow is computed with an all-zeros input and a weight counts as effective only if
  its flow from the ones input is larger: flow that comes from biases alone is not a path.

  Args:
    masks: bool masks with the structure of `params` (full-size leaves).
    params: the params the masks were found for (initial params: at init BatchNorm running
      statistics are the identity, which the path argument needs).
    apply_fn: `apply_fn(params, x) -> outputs`, BatchNorm in eval mode (e.g.
      `prospr_jax.adapters.LinenApply`); it must accept float64 params.
    input_shape: one example's input shape, e.g. `(28, 28, 1)`.
    filter_fn: chooses the prunable leaves; other leaves get all-True masks back.

  Returns:
    A bool pytree like `masks`, True where a kept prunable weight is effective.
  """
  masks_lib.check_masks(params, masks)
  prunable = masks_lib.prunable_tree(params, filter_fn)
  for (path, p), m, is_prunable in zip(jax.tree_util.tree_leaves_with_path(params),
                                       jax.tree.leaves(masks), jax.tree.leaves(prunable)):
    if is_prunable and np.shape(m) != np.shape(p):
      raise ValueError(f"The mask of '{masks_lib.path_str(path)}' has shape {np.shape(m)}, not "
                       f"its weight's {np.shape(p)}: effective sparsity needs full-size masks.")
  with jax.enable_x64(True):
    weights = jax.tree.map(
        lambda p, m, is_prunable: jnp.asarray(m if is_prunable else jnp.abs(p), jnp.float64),
        params, masks, prunable,
    )
    shape = (1, *input_shape)
    from_input = _path_flow(weights, jnp.ones(shape, jnp.float64), apply_fn=apply_fn)
    from_biases = _path_flow(weights, jnp.zeros(shape, jnp.float64), apply_fn=apply_fn)
    return jax.tree.map(
        lambda m, a, b, is_prunable: jnp.asarray(m, bool) & (a > b) if is_prunable
        else jnp.ones(np.shape(m), bool),
        masks, from_input, from_biases, prunable,
    )


def connectivity_summary(
    masks: PyTree,
    effective: PyTree,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> dict[str, Any]:
  """Effective density and collapse report of `masks` given `effective_masks(masks, ...)`.

  Returns:
    `effective_density/<layer>` and `effective_density/total` (effective kept weights over
    all weights of the layer / of all prunable layers), `inactive_fraction` (fraction of the
    kept weights that lie on no input-output path), `empty_layers` (prunable layers keeping
    no weight) and `disconnected_layers` (prunable layers with no effective weight, empty
    ones included), as lists of '/'-joined paths.
  """
  kept_leaves = jax.tree_util.tree_flatten_with_path(masks)[0]
  effective_leaves = jax.tree.leaves(effective)
  out: dict[str, Any] = {}
  size = kept = active = 0
  empty, disconnected = [], []
  for (path, m), e in zip(kept_leaves, effective_leaves, strict=True):
    if not filter_fn(path, m):
      continue
    name = masks_lib.path_str(path)
    n_kept, n_active = int(np.sum(m)), int(np.sum(e))
    out[f"effective_density/{name}"] = n_active / np.size(m)
    size, kept, active = size + np.size(m), kept + n_kept, active + n_active
    if n_kept == 0:
      empty.append(name)
    if n_active == 0:
      disconnected.append(name)
  out["effective_density/total"] = active / size
  out["inactive_fraction"] = 1.0 - active / kept if kept else 0.0
  out["empty_layers"] = empty
  out["disconnected_layers"] = disconnected
  return out
