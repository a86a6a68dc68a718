"""From group scores to kept channels, and from kept channels to a params mask pytree (and back).

"Channel sparsity" is the fraction of all group channels (summed over groups) removed.
`select_channels` keeps the globally top-scored channels; `expand_masks` turns the per-group
keep-vectors into a normal bool mask pytree for `apply_masks`, `keep_masked`,
`density_summary` and `save_masks`; `channels_from_masks` reads them back, refusing masks
that prune anything but whole channels (e.g. unstructured ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree
from prospr_jax.structured.groups import ChannelGroup, Slot, check_unique_names
from prospr_jax.structured.scoring import flat_leaves


def check_allocation(allocation: str) -> None:
  if allocation not in ("global", "uniform"):
    raise ValueError(
        f"Structured pruning supports allocation 'global' or 'uniform', not {allocation!r}."
    )


def select_channels(
    scores: Mapping[str, np.ndarray],
    sparsity: float,
    *,
    min_kept_per_group: int | None = None,
    allocation: Literal["global", "uniform"] = "global",
) -> dict[str, np.ndarray]:
  """Bool keep-vectors per group: the top `round((1 - sparsity) * n)` of all `n` group channels.

  Uses `masks.masks_from_scores` on the `{group: scores}` tree (ties to the earlier group
  in sorted-name order, then the lower channel).

  Args:
    scores: `{group name: (size,) scores}`.
    sparsity: channel sparsity, the fraction of all group channels removed, in [0, 1).
    min_kept_per_group: `None` raises `LayerCollapseError` if a group would keep no channel
      (that would cut the network); `m >= 1` first reserves each group's top `m` channels,
      then fills the rest of the same global budget by score (so exactly
      `round((1 - sparsity) * n)` channels are kept; `ValueError` if that is less than
      `m * n_groups`); `0` lets groups collapse (fine for masked training, not for
      compaction).
    allocation: 'global' (one top-k over all channels) or 'uniform' (the same fraction in
      every group).
  """
  check_allocation(allocation)
  n = sum(np.size(s) for s in scores.values())
  if min_kept_per_group and masks_lib.num_kept(sparsity, n) < min_kept_per_group * len(scores):
    raise ValueError(
        f"Sparsity {sparsity} keeps {masks_lib.num_kept(sparsity, n)} of {n} channels, fewer "
        f"than min_kept_per_group={min_kept_per_group} in each of the {len(scores)} groups."
    )
  try:
    keep = masks_lib.masks_from_scores(
        dict(scores), sparsity, filter_fn=lambda path, leaf: True, allocation=allocation,
        min_kept_per_layer=min_kept_per_group,
    )
  except masks_lib.LayerCollapseError as e:
    raise masks_lib.LayerCollapseError(
        f"{e} (here the 'layers' are channel groups: pass min_kept_per_group=1 to keep one "
        "channel per group)."
    ) from None
  return {k: np.asarray(v) for k, v in keep.items()}


def _slots(groups: Sequence[ChannelGroup]) -> dict[str, list[tuple[Slot, str]]]:
  """`{params path: [(slot, group name)]}` over members and consumers."""
  out: dict[str, list[tuple[Slot, str]]] = {}
  for g in groups:
    for slot in (*g.members, *g.consumers):
      out.setdefault(slot.path, []).append((slot, g.name))
  return out


def axis_keep(slot: Slot, keep: np.ndarray, length: int) -> np.ndarray:
  """Bool `(length,)` along `slot.axis`: False at the positions of the removed channels."""
  kept = np.ones(length, bool)
  kept[slot.index[~np.asarray(keep, bool)].ravel()] = False
  return kept


def expand_masks(
    params: PyTree, groups: Sequence[ChannelGroup], keep: Mapping[str, np.ndarray]
) -> PyTree:
  """A bool mask pytree for `params` from per-group keep-vectors.

  A leaf touched by groups gets a mask that is full-size on each touched axis and 1 elsewhere:
  a member kernel `[kh, kw, in, out]` `(1, 1, 1, out)`, BatchNorm scale/bias `(out,)`, a kernel
  that also consumes a group `(1, 1, in, out)`, a dense head `(in, 1)`. Masking the consumers'
  inputs does not change the masked network's function (those inputs are exactly 0, or read by
  nothing else) but makes `density_summary` count the weights that really remain and keeps
  them at 0 in training. Every other leaf gets an all-True mask of its full shape.
  """
  check_unique_names(groups)
  _check_keep_vectors(groups, keep)
  slots = _slots(groups)

  def make(path: masks_lib.KeyPath, p: jax.Array) -> jax.Array:
    touching = slots.get(masks_lib.path_str(path))
    if touching is None:
      return jnp.ones(p.shape, bool)
    return jnp.asarray(_leaf_mask(touching, p.shape, keep))

  return jax.tree_util.tree_map_with_path(make, params)


def _leaf_mask(touching: Sequence[tuple[Slot, str]], shape: tuple[int, ...],
               keep: Mapping[str, np.ndarray]) -> np.ndarray:
  """The mask of one leaf of shape `shape` touched by these `(slot, group name)` pairs: False at
  the positions of removed channels on each touched axis, broadcastable to `shape` (all True
  with shape `(1,) * len(shape)` if nothing touches it)."""
  mask = np.ones((1,) * len(shape), bool)
  for slot, name in touching:
    axis_shape = [1] * len(shape)
    axis_shape[slot.axis] = shape[slot.axis]
    mask = mask & axis_keep(slot, keep[name], shape[slot.axis]).reshape(axis_shape)
  return mask


def _check_keep_vectors(groups: Sequence[ChannelGroup], keep: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError unless `keep` holds a `(size,)` keep-vector for every group."""
  for g in groups:
    if g.name not in keep:
      raise ValueError(f"No keep-vector for channel group '{g.name}'; have {sorted(keep)}.")
    if np.shape(keep[g.name]) != (g.size,):
      raise ValueError(
          f"The keep-vector of channel group '{g.name}' has shape {np.shape(keep[g.name])}; the "
          f"group has {g.size} channels, so it must have shape ({g.size},)."
      )


def _check_whole_channels(params: PyTree, groups: Sequence[ChannelGroup], masks: PyTree,
                          keep: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError at the first leaf whose mask prunes an entry that no removed channel of
  `keep` owns. Channel-group masks prune only what `expand_masks(params, groups, keep)` prunes
  (they may leave a removed channel's consumer entries, which read zeros, unpruned)."""
  slots = _slots(groups)
  leaves = flat_leaves(params)
  for path, mask in flat_leaves(masks).items():
    shape = np.shape(leaves[path])
    stray = ~np.asarray(mask, bool) & _leaf_mask(slots.get(path, ()), shape, keep)
    if stray.any():
      count = int(np.broadcast_to(stray, shape).sum())
      raise ValueError(
          f"The mask at '{path}' prunes single weights ({count} outside removed channels), "
          "not whole channels: channel compaction needs channel-group masks from "
          "structured_prune (unstructured masks, e.g. from pj.prune, cannot be compacted)."
      )


def channels_from_masks(
    params: PyTree, groups: Sequence[ChannelGroup], masks: PyTree
) -> dict[str, np.ndarray]:
  """Recovers the per-group keep-vectors from a mask pytree (inverse of `expand_masks`).

  A member's channel counts as kept if any of its entries is kept.

  Raises:
    TypeError: if a mask leaf is not bool (`masks.check_masks`).
    ValueError: if the masks are not channel-group masks: the members of a group disagree, or
      a mask prunes single weights rather than whole channels (e.g. `pj.prune`'s masks); or if
      a group keeps no channel.
  """
  check_unique_names(groups)
  masks_lib.check_masks(params, masks)
  leaves, mask_leaves = flat_leaves(params), flat_leaves(masks)
  keep = {}
  for g in groups:
    vectors = []
    for m in g.members:
      full = np.broadcast_to(np.asarray(mask_leaves[m.path], bool), np.shape(leaves[m.path]))
      per_position = np.moveaxis(full, m.axis, 0).reshape(full.shape[m.axis], -1).any(axis=1)
      vectors.append(per_position[m.index].any(axis=1))
    if not any(v.any() for v in vectors):
      raise ValueError(f"Channel group '{g.name}' keeps no channel.")
    if any(not np.array_equal(v, vectors[0]) for v in vectors):
      raise ValueError(
          f"The masks of channel group '{g.name}' differ between its members "
          f"{[m.path for m in g.members]}: these are not channel-group masks "
          "(build them with structured_prune)."
      )
    keep[g.name] = vectors[0]
  _check_whole_channels(params, groups, masks, keep)
  return keep
