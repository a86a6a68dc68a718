"""Mask pytrees: which weights are prunable, masks from scores, applying and saving masks.

A *mask pytree* has exactly the tree structure of the params. Every leaf is an array (never
`None`): prunable leaves hold the mask (`bool`; either the leaf's full shape for unstructured
masks or a shape broadcastable to it, e.g. `(1, 1, 1, out)` for one entry per output channel),
unprunable leaves (biases, BatchNorm scales, excluded layers) hold all-`True` masks.

"Sparsity" is always the fraction of prunable mask entries that are REMOVED.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from prospr_jax.tree_types import KeyPath, PyTree

FilterFn = Callable[[KeyPath, Any], bool]
Allocation = Literal["global", "uniform", "erk"]
ALLOCATIONS = ("global", "uniform", "erk")


class LayerCollapseError(ValueError):
  """A prunable layer would keep no weights at all (the network would be disconnected)."""


def path_str(path: KeyPath) -> str:
  """Returns a key path as a '/'-joined string, e.g. `('params', 'head', 'kernel')` -> 'params/head/kernel'."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def kernel_filter(exclude: Sequence[str] = ()) -> FilterFn:
  """Returns a `filter_fn(path, param)` choosing conv/dense kernels (`ndim > 1`) as prunable.

  Args:
    exclude: regular expressions; a leaf whose '/'-joined path matches any of them
      (`re.search`) is not prunable. `exclude=('head',)` keeps the classifier dense.
  """
  patterns = tuple(re.compile(p) for p in exclude)

  def filter_fn(path: KeyPath, param: Any) -> bool:
    name = path_str(path)
    return np.ndim(param) > 1 and not any(p.search(name) for p in patterns)

  return filter_fn


default_filter: FilterFn = kernel_filter()
"""Every leaf with `ndim > 1` (conv and dense kernels) is prunable."""


def prunable_tree(tree: PyTree, filter_fn: FilterFn = default_filter) -> PyTree:
  """A pytree of Python bools with the structure of `tree`: whether `filter_fn` marks each leaf."""
  return jax.tree_util.tree_map_with_path(lambda p, x: bool(filter_fn(p, x)), tree)


def ones_masks(params: PyTree, *, dtype: Any = None) -> PyTree:
  """All-ones masks with the structure and shapes of `params`.

  Args:
    params: the parameter pytree.
    dtype: dtype of the masks; `None` gives each leaf its param's dtype (the continuous mask
      `c` that saliency criteria differentiate); pass `bool` for a binary mask.
  """
  return jax.tree.map(lambda p: jnp.ones(p.shape, dtype=p.dtype if dtype is None else dtype),
                      params)


def check_masks(params: PyTree, masks: PyTree) -> None:
  """Raises unless `masks` is a mask pytree for `params`.

  A mask pytree has the tree structure of `params`, and each leaf is a `bool` array whose shape
  broadcasts to its param's shape.

  Raises:
    ValueError: another tree structure, or a shape that does not broadcast.
    TypeError: a leaf that is not `bool` (a float mask such as 0.5 would rescale weights rather
      than keep or prune them; convert 0/1 masks with `m.astype(bool)` first).
  """
  p_def, m_def = jax.tree.structure(params), jax.tree.structure(masks)
  if p_def != m_def:
    raise ValueError(
        "The mask tree does not match the params tree. Build masks from these params "
        f"(e.g. with `ones_masks(params)`).\nparams: {p_def}\nmasks:  {m_def}"
    )
  for (path, p), m in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(masks)
  ):
    dtype = jnp.result_type(m)
    if dtype != jnp.bool_:
      raise TypeError(
          f"The mask at '{path_str(path)}' has dtype {dtype}; masks must be bool (True keeps a "
          "weight, False prunes it). A float mask would rescale weights instead of pruning them; "
          "convert 0/1 masks with `.astype(bool)`."
      )
    try:
      shape = np.broadcast_shapes(np.shape(m), np.shape(p))
    except ValueError:
      shape = None
    if shape != np.shape(p):
      raise ValueError(
          f"The mask at '{path_str(path)}' has shape {np.shape(m)}, which does not broadcast "
          f"to the param's shape {np.shape(p)}."
      )


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
  """Returns `params * masks` leaf by leaf (bool masks broadcast, cast to each param's dtype)."""
  check_masks(params, masks)
  return jax.tree.map(lambda p, m: p * jnp.asarray(m, p.dtype), params, masks)


def check_sparsity(sparsity: float) -> None:
  """Raises TypeError unless `sparsity` is a real number (not a bool), ValueError unless in [0, 1)."""
  if np.ndim(sparsity) != 0 or np.asarray(sparsity).dtype.kind not in "iuf":
    raise TypeError(
        f"sparsity must be a number in [0, 1), the fraction of prunable weights removed; got "
        f"{sparsity!r} of type {type(sparsity).__name__}."
    )
  if not 0.0 <= sparsity < 1.0 or math.isnan(sparsity):
    raise ValueError(
        f"sparsity={sparsity} is outside [0, 1): it is the fraction of prunable weights removed, "
        "e.g. 0.98 keeps 2%."
    )


def check_float_params(params: PyTree) -> None:
  """Raises unless every leaf of `params` is a floating-point array of finite values.

  Raises:
    TypeError: a leaf that is not floating point (e.g. int or bool).
    ValueError: a leaf holding NaN or inf (checked on concrete arrays only, not under `jit`
      or on `jax.ShapeDtypeStruct`s).
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  bad = [
      f"'{path_str(path)}' ({jnp.result_type(leaf)})"
      for path, leaf in leaves
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
  ]
  if bad:
    raise TypeError(
        f"Pruning scores floating-point weights; these params are not floating point: "
        f"{', '.join(bad)}. Cast them first, e.g. "
        "`jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)`."
    )
  non_finite = [
      path_str(path) for path, leaf in leaves
      if not isinstance(leaf, (jax.core.Tracer, jax.ShapeDtypeStruct))
      and not np.all(np.isfinite(np.asarray(leaf)))
  ]
  if non_finite:
    raise ValueError(
        f"The params at {non_finite} contain NaN or inf before pruning: check the "
        "initialization (or the checkpoint they came from)."
    )


def check_min_kept(min_kept_per_layer: int | None) -> None:
  """Raises TypeError/ValueError unless `min_kept_per_layer` is `None` or an int >= 0."""
  if min_kept_per_layer is None:
    return
  if isinstance(min_kept_per_layer, bool) or not isinstance(min_kept_per_layer,
                                                             (int, np.integer)):
    raise TypeError(
        f"min_kept_per_layer must be None or an int >= 0 (entries each prunable layer keeps at "
        f"least); got {min_kept_per_layer!r} of type {type(min_kept_per_layer).__name__}."
    )
  if min_kept_per_layer < 0:
    raise ValueError(
        f"min_kept_per_layer={min_kept_per_layer} is negative; use 0 to let layers collapse or "
        "None to make a collapsed layer an error."
    )


def num_kept(sparsity: float, n: int) -> int:
  """Number of entries kept out of `n` at `sparsity`: `round((1 - sparsity) * n)`."""
  check_sparsity(sparsity)
  return int(round((1.0 - sparsity) * n))


def top_k_mask(flat_scores: jax.Array, k: int) -> np.ndarray:
  """Boolean vector keeping the `k` largest scores; ties go to the lower index."""
  order = np.argsort(-np.asarray(flat_scores, np.float64), kind="stable")
  keep = np.zeros(flat_scores.shape[0], bool)
  keep[order[:k]] = True
  return keep


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
  """Erdős–Rényi-kernel layer densities (Evci et al. 2020) whose weighted mean is `density`.

  Each layer's density is `eps * sum(shape) / prod(shape)`, with `eps` chosen so that the
  kept counts add up to `density * total`; layers whose density would exceed 1 are kept dense
  and `eps` is solved again over the rest.
  """
  sizes = [math.prod(s) for s in shapes]
  raw = [sum(s) / math.prod(s) for s in shapes]
  dense: set[int] = set()
  while True:
    budget = density * sum(sizes) - sum(sizes[i] for i in dense)
    rest = [i for i in range(len(shapes)) if i not in dense]
    eps = budget / sum(raw[i] * sizes[i] for i in rest)
    over = {i for i in rest if eps * raw[i] > 1.0}
    if not over:
      return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
    dense |= over


def masks_from_scores(
    scores: PyTree,
    sparsity: float,
    *,
    filter_fn: FilterFn = default_filter,
    allocation: Allocation = "global",
    min_kept_per_layer: int | None = None,
    eligible: PyTree | None = None,
) -> PyTree:
  """Binary masks keeping the highest-scored prunable entries.

  Args:
    scores: score pytree (higher = keep), e.g. from a saliency criterion. Its leaves have the
      shapes of the masks to build (full param shapes, or per-channel shapes).
    sparsity: fraction of prunable entries to remove, in [0, 1).
    filter_fn: chooses the prunable leaves (called on `(path, score_leaf)`); other leaves get
      all-True masks.
    allocation: 'global' ranks all prunable entries together and keeps exactly
      `round((1 - sparsity) * n_prunable)`; 'uniform' keeps `round((1 - sparsity) * n_layer)`
      in every layer; 'erk' keeps `round(d_layer * n_layer)` with Erdős–Rényi-kernel
      densities `d_layer` (see `erk_densities`). Ties break towards the earlier entry
      (flattened, in tree order), so the result is deterministic.
    min_kept_per_layer: `None` raises `LayerCollapseError` if a prunable layer would keep no
      entry; an int `m >= 0` first reserves each layer's top-`m` entries, then fills the rest of
      the (unchanged) global budget by score (`0` allows layers to collapse). An `m` larger
      than a prunable layer, or reserving more than the global budget, is a `ValueError`.
    eligible: optional bool pytree like `scores`; entries that are False are never kept
      (used by iterative pruning so that pruned weights stay pruned).

  Returns:
    A bool mask pytree with the structure and leaf shapes of `scores`.
  """
  check_sparsity(sparsity)
  if allocation not in ALLOCATIONS:
    raise ValueError(f"Unknown allocation {allocation!r}; choose one of {ALLOCATIONS}.")
  check_min_kept(min_kept_per_layer)
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(scores)
  prunable = [i for i, (p, s) in enumerate(leaves_with_path) if filter_fn(p, s)]
  if not prunable:
    raise ValueError("filter_fn marks no leaf of the score tree as prunable.")
  names = [path_str(leaves_with_path[i][0]) for i in prunable]
  flats = [np.asarray(leaves_with_path[i][1], np.float64).ravel() for i in prunable]
  for name, flat in zip(names, flats):
    if not np.all(np.isfinite(flat)):
      raise ValueError(
          f"Scores at '{name}' contain NaN or inf: the saliency computation overflowed or "
          "diverged (try float64, a smaller inner learning rate, or fewer inner steps)."
      )
  if eligible is not None:
    el = jax.tree.leaves(eligible)
    flats = [np.where(np.asarray(el[i]).ravel(), f, -np.inf) for i, f in zip(prunable, flats)]

  sizes = [f.size for f in flats]
  too_small = [f"'{n}' ({size})" for n, size in zip(names, sizes)
               if size < (min_kept_per_layer or 0)]
  if too_small:
    raise ValueError(
        f"min_kept_per_layer={min_kept_per_layer} is more than these prunable layers hold: "
        f"{', '.join(too_small)}."
    )
  if allocation == "global":
    keys = np.concatenate(flats)
    budget = num_kept(sparsity, keys.size)
    if min_kept_per_layer:
      reserved = 0
      for start, flat in zip(np.cumsum([0] + sizes[:-1]), flats):
        top = top_k_mask(flat, min_kept_per_layer) & np.isfinite(flat)
        keys[start : start + flat.size][top] = np.inf
        reserved += int(top.sum())
      if reserved > budget:
        raise ValueError(
            f"min_kept_per_layer={min_kept_per_layer} reserves {reserved} entries over "
            f"{len(flats)} prunable layers, more than the {budget} that sparsity {sparsity} "
            "keeps in all: lower min_kept_per_layer or the sparsity."
        )
    keep = top_k_mask(keys, budget)
    kept_flats = np.split(keep, np.cumsum(sizes)[:-1])
  else:
    densities = (
        [1.0 - sparsity] * len(flats)
        if allocation == "uniform"
        else erk_densities([np.shape(leaves_with_path[i][1]) for i in prunable], 1.0 - sparsity)
    )
    kept_flats = [
        top_k_mask(f, max(int(round(d * f.size)), min_kept_per_layer or 0))
        for f, d in zip(flats, densities)
    ]
  if eligible is not None:
    kept_flats = [k & np.isfinite(f) for k, f in zip(kept_flats, flats)]

  if min_kept_per_layer is None:
    collapsed = [n for n, k in zip(names, kept_flats) if not k.any()]
    if collapsed:
      raise LayerCollapseError(
          f"At sparsity {sparsity} these layers would keep no weights: {collapsed}. Lower the "
          "sparsity, use another allocation, or pass min_kept_per_layer=1 to keep a minimum "
          "per layer."
      )

  out = [np.ones(np.shape(s), bool) for _, s in leaves_with_path]
  for i, k in zip(prunable, kept_flats):
    out[i] = k.reshape(np.shape(leaves_with_path[i][1]))
  return jax.tree.unflatten(treedef, [jnp.asarray(m) for m in out])


def density_summary(
    masks: PyTree, params: PyTree, filter_fn: FilterFn = default_filter
) -> dict[str, float]:
  """Fraction of weights kept per prunable leaf and in total, ready for logging.

  Counts effective weights: a per-channel mask entry counts for every weight it covers.

  Returns:
    `{'density/<path>': kept/size for each prunable leaf, 'density/total': kept/size over all
    prunable leaves, 'sparsity/total': 1 - density/total}`.
  """
  check_masks(params, masks)
  out: dict[str, float] = {}
  kept_total = size_total = 0
  for (path, p), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(masks)):
    if not filter_fn(path, p):
      continue
    kept = int(np.count_nonzero(np.broadcast_to(np.asarray(m), np.shape(p))))
    out[f"density/{path_str(path)}"] = kept / p.size
    kept_total += kept
    size_total += p.size
  out["density/total"] = kept_total / size_total
  out["sparsity/total"] = 1.0 - out["density/total"]
  return out


def save_masks(path: str | os.PathLike, masks: PyTree) -> None:
  """Saves a mask pytree to an `.npz` file, one array per leaf keyed by its '/'-joined path."""
  arrays = {path_str(p): np.asarray(m) for p, m in jax.tree_util.tree_leaves_with_path(masks)}
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def load_masks(path: str | os.PathLike, like: PyTree) -> PyTree:
  """Loads masks saved by `save_masks` into the tree structure of `like` (params or masks).

  Raises:
    ValueError: the file is not an `.npz` archive of arrays (truncated or corrupt), its leaf
      paths differ from `like`'s, or a mask does not broadcast to its leaf in `like`.
    TypeError: a stored mask is not bool.
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      stored = {k: data[k] for k in data.files}
  except FileNotFoundError:
    raise
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(
        f"{path} is not a masks file that save_masks wrote (an .npz archive of bool arrays): "
        f"{type(e).__name__}: {e}"
    ) from e
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
  wanted = [path_str(p) for p, _ in leaves_with_path]
  if sorted(wanted) != sorted(stored):
    raise ValueError(
        f"Masks in {path} do not match the given tree: missing {sorted(set(wanted) - set(stored))},"
        f" unexpected {sorted(set(stored) - set(wanted))}."
    )
  masks = jax.tree.unflatten(treedef, [jnp.asarray(stored[k]) for k in wanted])
  check_masks(like, masks)
  return masks
