"""Sanity checks for pruning at initialization (Frankle et al., ICLR 2021).

A method whose accuracy survives these checks found only per-layer densities, not which
weights matter:

* `shuffle`: the kept positions are permuted uniformly at random within each layer (every
  layer keeps its number of weights) — `shuffle_within_layers`;
* `reinit`: the found mask is trained from a fresh initialization instead of the one it was
  found on (done by the training loop, `prospr_jax.experiment.train`);
* `invert`: each layer keeps its lowest-scored weights, as many as the method kept there —
  `invert_selection` (one-shot scoring methods only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree

SANITY_CHECKS = ("shuffle", "reinit", "invert")


def check_sanity_check(name: str | None) -> None:
  """Raises ValueError unless `name` is None or one of `SANITY_CHECKS`."""
  if name is not None and name not in SANITY_CHECKS:
    raise ValueError(f"Unknown sanity check {name!r}; choose one of {SANITY_CHECKS} or None.")


def shuffle_within_layers(
    masks: PyTree, key: jax.Array, filter_fn: masks_lib.FilterFn = masks_lib.default_filter
) -> PyTree:
  """`masks` with each prunable leaf's entries permuted uniformly at random (own key per leaf).

  Every prunable leaf keeps exactly its number of True entries (its density); the other
  leaves are returned unchanged.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(masks)
  out = []
  for i, (path, m) in enumerate(leaves):
    if filter_fn(path, m):
      m = jax.random.permutation(jax.random.fold_in(key, i), jnp.ravel(m)).reshape(m.shape)
    out.append(m)
  return jax.tree.unflatten(treedef, out)


def invert_selection(
    scores: PyTree, masks: PyTree, filter_fn: masks_lib.FilterFn = masks_lib.default_filter
) -> PyTree:
  """Per prunable leaf, keeps its `masks[leaf].sum()` LOWEST-scored entries.

  `masks` is the method's own selection from `scores` (same structure and leaf shapes); the
  result has the same number of kept entries in every leaf. Ties break towards the earlier
  entry, as in `masks_lib.masks_from_scores`.
  """
  score_leaves = jax.tree.leaves(scores)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(masks)
  out = []
  for (path, m), s in zip(leaves, score_leaves, strict=True):
    if filter_fn(path, m):
      count = int(np.sum(m))
      flat = -np.asarray(s, np.float64).ravel()
      m = jnp.asarray(masks_lib.top_k_mask(flat, count).reshape(np.shape(m)))
    out.append(m)
  return jax.tree.unflatten(treedef, out)
