"""Channel groups: the traced channels that share one mask, and the leaf axes it acts on.

A *channel group* is a set of channels gated by ONE shared channel mask `g` (shape `(size,)`):

* `members`: params axes multiplied by `g` — a conv/dense kernel's output axis, the bias and
  BatchNorm scale/bias added to or multiplying those channels, and, through a residual
  addition, every other layer feeding the same sum. Masking BN's scale and bias too makes a
  pruned channel exactly 0 after BN (+ ReLU); with only the kernel masked BN's bias would keep
  it alive;
* `consumers`: params axes that read the channels — the input axis of the next conv/dense
  (several rows per channel after a flatten). They are not gated, but their entries for
  pruned channels are dead, so the masks zero them too and compaction removes them;
* `state`: non-trainable leaves sliced with the channels (BatchNorm running mean and var).

`channel_groups(trace)` builds them from `tracing.trace_channels`: each unpinned component of
atoms with at least one params member is one channel, and channels touching the same leaf axes
the same number of times form one group. Every leaf axis of the component must have a role
(else the component is left alone: the tracer could not prove that removing it is exact).
A group is named after the module path of its first producer (the kernel fewest layers from
the input), e.g. 'conv3/conv', 'stem_conv', 'stage2_block0/shortcut_conv'. Where several groups
share that module path, the first of these parts that tells them apart is added, repeatedly
while names still collide: the producer's leaf path ('w/0' and 'w/1' for two kernels in a list
under 'w'), its axis (':axis1' and ':axis2' for the heads and head-dim axes of one attention
kernel), the offset of the group's first channel along it ('@0' and '@8' for two halves of one
kernel's outputs). Names are unique (`check_unique_names`) and depend only on the program.
Groups are ordered by their first use in the program and channels by their position in the
producer's output axis.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from prospr_jax.structured.trace_types import MEMBER, ChannelTrace, LeafAxis


@dataclasses.dataclass(frozen=True, eq=False)
class Slot:
  """The positions of a group's channels along one axis of one leaf.

  Attributes:
    path: the leaf's '/'-joined path in its tree (params or state), e.g. 'conv1/conv/kernel'.
    axis: the axis (non-negative).
    index: `(size, k)` ints: channel `j` owns positions `index[j]` along `axis` (`k > 1` e.g.
      for the rows of a dense layer after a flatten, one per spatial position).
  """

  path: str
  axis: int
  index: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelGroup:
  """Channels gated by one shared mask (module docstring).

  Attributes:
    name: the module path of the group's first producer, e.g. 'conv3/conv', qualified where
      groups share it (module docstring), e.g. 'mha/query:axis1'; unique among the groups.
    size: number of channels.
    members: params axes gated by the group's mask.
    consumers: params axes reading the group's channels.
    state: state axes (e.g. BatchNorm statistics) sliced with the channels.
  """

  name: str
  size: int
  members: tuple[Slot, ...]
  consumers: tuple[Slot, ...]
  state: tuple[Slot, ...]


def num_channels(groups: Sequence[ChannelGroup]) -> int:
  """Total number of prunable channels: the sum of the group sizes."""
  return sum(g.size for g in groups)


def check_unique_names(groups: Sequence[ChannelGroup]) -> None:
  """Raises ValueError if two groups share a name (scores and keep-vectors are keyed by name,
  so one group's would silently replace the other's)."""
  counts = collections.Counter(g.name for g in groups)
  shared = [name for name, count in counts.items() if count > 1]
  if shared:
    members = [[(m.path, m.axis) for m in g.members[:1]] for g in groups if g.name == shared[0]]
    raise ValueError(
        f"Channel group names must be unique, but '{shared[0]}' names {counts[shared[0]]} "
        f"groups (first members as (path, axis): {members}); all shared names: {shared}."
    )


def _leaf_keys(path: str) -> list[str]:
  """A leaf path's keys without NNX's trailing 'value': 'c1/kernel/value' -> ['c1', 'kernel']."""
  keys = path.split("/")
  return keys[:-1] if keys[-1] == "value" and len(keys) > 1 else keys


def module_path(path: str) -> str:
  """'conv1/conv/kernel' -> 'conv1/conv'; NNX's 'c1/kernel/value' -> 'c1'; 'w1' -> 'w1'."""
  keys = _leaf_keys(path)
  return "/".join(keys[:-1]) or keys[0]


@dataclasses.dataclass(frozen=True)
class _NameParts:
  """What may name a group: its producer's module path and leaf path (NNX's 'value' dropped),
  the producer's axis, and the offset of the group's first channel along that axis."""

  module: str
  leaf: str
  axis: int
  start: int


_QUALIFIERS: tuple[tuple[str, Callable[[str, _NameParts], str]], ...] = (
    ("leaf", lambda name, parts: parts.leaf),  # the leaf path extends its module path
    ("axis", lambda name, parts: f"{name}:axis{parts.axis}"),
    ("start", lambda name, parts: f"{name}@{parts.start}"),
)
"""In order, the part a name is qualified by where it collides, and how it is added."""


def _group_names(parts: Sequence[_NameParts]) -> list[str]:
  """One name per group: its module path, qualified where names collide (module docstring)."""
  names = [p.module for p in parts]
  for field, qualify in _QUALIFIERS:
    sharing: dict[str, list[int]] = collections.defaultdict(list)
    for i, name in enumerate(names):
      sharing[name].append(i)
    for same in sharing.values():
      if len({getattr(parts[i], field) for i in same}) > 1:
        for i in same:
          names[i] = qualify(names[i], parts[i])
  return names


def _leaf_atom_table(trace: ChannelTrace) -> tuple[np.ndarray, ...]:
  """`(root, leaf axis id, position)` of every leaf atom, as aligned int arrays, and the
  `(leaf, axis)` pair of every leaf axis id."""
  roots, ids, positions, pairs = [], [], [], []
  for leaf_index, leaf in enumerate(trace.leaves):
    for axis, atoms in enumerate(leaf.atoms):
      roots.append(trace.roots[atoms])
      ids.append(np.full(len(atoms), len(pairs)))
      positions.append(np.arange(len(atoms)))
      pairs.append((leaf_index, axis))
  return np.concatenate(roots), np.concatenate(ids), np.concatenate(positions), pairs


def _prunable_roots(trace: ChannelTrace, roots: np.ndarray, ids: np.ndarray,
                    pairs: list[LeafAxis]) -> np.ndarray:
  """Roots that are unpinned, have a params member, and whose leaf axes all have a role."""
  roles = [trace.roles.get(pair) for pair in pairs]
  has_role = np.array([r is not None for r in roles], bool)[ids]
  param_member = np.array([leaf < trace.num_params and r is not None and r.kind == MEMBER
                           for (leaf, _), r in zip(pairs, roles)], bool)[ids]
  free = ~trace.pinned[roots]
  return np.setdiff1d(np.unique(roots[free & param_member]), roots[free & ~has_role])


def _channels_by_signature(
    trace: ChannelTrace,
) -> list[tuple[list[LeafAxis], dict[LeafAxis, np.ndarray]]]:
  """The prunable channels, classed by the leaf axes they touch and how often (a signature).

  Returns one `(leaf axes, {leaf axis: (n, k) positions})` per class, `n` channels each.
  """
  roots, ids, positions, pairs = _leaf_atom_table(trace)
  keep = np.isin(roots, _prunable_roots(trace, roots, ids, pairs))
  roots, ids, positions = roots[keep], ids[keep], positions[keep]
  order = np.lexsort((positions, ids, roots))
  roots, ids, positions = roots[order], ids[order], positions[order]
  if not len(roots):
    return []
  # Segments: runs of one (root, leaf axis); channels: runs of one root.
  seg_start = np.flatnonzero(np.r_[True, (roots[1:] != roots[:-1]) | (ids[1:] != ids[:-1])])
  seg_count = np.diff(np.r_[seg_start, len(roots)])
  seg_root, seg_id = roots[seg_start], ids[seg_start]
  chan_start = np.flatnonzero(np.r_[True, seg_root[1:] != seg_root[:-1]])
  chan_end = np.r_[chan_start[1:], len(seg_id)]
  codes = (seg_id * (len(roots) + 1) + seg_count).tolist()
  classes: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
  for c, (lo, hi) in enumerate(zip(chan_start.tolist(), chan_end.tolist())):
    classes[tuple(codes[lo:hi])].append(c)
  out = []
  for channels in classes.values():
    first = chan_start[channels]
    width = chan_end[channels[0]] - first[0]
    leaf_axes, index = [], {}
    for j in range(width):
      segment = first + j
      pair = pairs[seg_id[segment[0]]]
      k = seg_count[segment[0]]
      leaf_axes.append(pair)
      index[pair] = positions[seg_start[segment][:, None] + np.arange(k)]
    out.append((leaf_axes, index))
  return out


def _name_slot(trace: ChannelTrace, leaf_axes: list[LeafAxis]) -> LeafAxis:
  """The member that names a group: its first producer, else its first-used member."""
  members = [la for la in leaf_axes
             if la[0] < trace.num_params and trace.roles[la].kind == MEMBER]
  producers = [la for la in members if trace.roles[la].producer is not None]
  if producers:
    return min(producers, key=lambda la: trace.roles[la].producer)
  return min(members, key=lambda la: trace.roles[la].first_use)


def channel_groups(trace: ChannelTrace) -> list[ChannelGroup]:
  """The channel groups of a traced program (module docstring), in program order."""
  built = []
  for leaf_axes, index in _channels_by_signature(trace):
    name_slot = _name_slot(trace, leaf_axes)
    order = np.argsort(index[name_slot][:, 0], kind="stable")
    slots: dict[str, list[Slot]] = {"members": [], "consumers": [], "state": []}
    for leaf, axis in sorted(leaf_axes, key=lambda la: trace.roles[la].first_use):
      info = trace.leaves[leaf]
      if info.kind == "const":
        continue  # jaxpr constants are sliced by compaction, not exposed
      kind = ("state" if info.kind == "state" else
              "members" if trace.roles[(leaf, axis)].kind == MEMBER else "consumers")
      slots[kind].append(Slot(info.path, axis, index[(leaf, axis)][order]))
    first_use = min(trace.roles[la].first_use for la in leaf_axes
                    if trace.roles[la].kind == MEMBER)
    path = trace.leaves[name_slot[0]].path
    parts = _NameParts(module_path(path), "/".join(_leaf_keys(path)), name_slot[1],
                       int(index[name_slot][order[0], 0]))
    built.append((first_use, parts, len(order), slots))
  built.sort(key=lambda b: b[0])
  names = _group_names([parts for _, parts, _, _ in built])
  groups = [
      ChannelGroup(name, size, tuple(slots["members"]), tuple(slots["consumers"]),
                   tuple(slots["state"]))
      for name, (_, _, size, slots) in zip(names, built)
  ]
  check_unique_names(groups)
  return groups


def group_roots(trace: ChannelTrace, group: ChannelGroup) -> np.ndarray:
  """The atom component (root) of each channel of `group`, found through its first member."""
  slot = group.members[0]
  leaf = next(f for f in trace.leaves[: trace.num_params] if f.path == slot.path)
  return trace.roots[leaf.atoms[slot.axis][slot.index[:, 0]]]
