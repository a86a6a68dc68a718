"""From group scores to kept channels, and from kept channels to a params mask pytree (and back).

"Channel sparsity" is the fraction of all group channels (summed over groups) removed.
`select_channels` keeps the globally top-scored channels; `expand_masks` turns the per-group
keep-vectors into a normal bool mask pytree for `apply_masks`, `keep_masked`,
`density_summary` and `save_masks`; `channels_from_masks` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree
from prospr_jax.structured.groups import ChannelGroup, Slot
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
  slots = _slots(groups)

  def make(path: masks_lib.KeyPath, p: jax.Array) -> jax.Array:
    touching = slots.get(masks_lib.path_str(path))
    if touching is None:
      return jnp.ones(p.shape, bool)
    mask = np.ones((1,) * p.ndim, bool)
    for slot, name in touching:
      shape = [1] * p.ndim
      shape[slot.axis] = p.shape[slot.axis]
      mask = mask & axis_keep(slot, keep[name], p.shape[slot.axis]).reshape(shape)
    return jnp.asarray(mask)

  return jax.tree_util.tree_map_with_path(make, params)


def channels_from_masks(
    params: PyTree, groups: Sequence[ChannelGroup], masks: PyTree
) -> dict[str, np.ndarray]:
  """Recovers the per-group keep-vectors from a mask pytree (inverse of `expand_masks`).

  A member's channel counts as kept if any of its entries is kept.

  Raises:
    ValueError: if the members of a group disagree (not channel-group masks) or a group
      keeps no channel.
  """
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
  return keep
