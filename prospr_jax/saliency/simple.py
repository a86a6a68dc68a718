"""Data-free baselines: magnitude and random scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.saliency.objective import PyTree


def magnitude_scores(
    params: PyTree,
    *,
    structured: bool = False,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> PyTree:
  """`|θ|`; with `structured`, the L1 norm of each output channel of the prunable leaves."""
  shapes = masks_lib.ones_masks(params, filter_fn, structured=structured)
  return jax.tree.map(lambda p, m: objective.reduce_to(jnp.abs(p), m.shape), params, shapes)


def random_scores(
    params: PyTree,
    key: jax.Array,
    *,
    structured: bool = False,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
) -> PyTree:
  """Independent Uniform[0, 1) scores from `key`, one per mask entry (per channel if `structured`)."""
  shapes = masks_lib.ones_masks(params, filter_fn, structured=structured)
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [jax.random.uniform(k, m.shape) for k, m in zip(keys, leaves)]
  )
