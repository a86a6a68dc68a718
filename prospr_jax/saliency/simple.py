"""Data-free baselines: magnitude and random scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prospr_jax.tree_types import PyTree


def magnitude_scores(params: PyTree) -> PyTree:
  """`|θ|`."""
  return jax.tree.map(jnp.abs, params)


def random_scores(params: PyTree, key: jax.Array) -> PyTree:
  """Independent Uniform[0, 1) scores from `key`, one per weight."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [jax.random.uniform(k, jnp.shape(p)) for k, p in zip(keys, leaves)]
  )
