"""Structured (channel) pruning with coupled channels: channel groups, their scores, masks.

A *channel group* is a set of parameter axes gated by ONE shared channel mask `g` (shape
`(size,)`, one entry per channel):

* its *members* are the leaves whose LAST axis is multiplied by `g`: the output axis of a conv
  kernel (`[kh, kw, in, out]`) and the BatchNorm `scale` and `bias` that follow that conv.
  Masking BN's scale and bias too makes a pruned channel exactly 0 after BN (+ ReLU) in train
  and eval mode (`scale * (x - mean) / sqrt(var + eps) + bias = 0`); with only the kernel
  masked, BN's bias would keep the channel alive;
* its *consumers* are the kernels whose INPUT axis (`-2`: `[kh, kw, in, out]` or
  `[in, out]` for the dense `head`) reads the group's channels. They are not gated (a pruned
  channel carries zeros), but their input slices of pruned channels are dead weights, so the
  masks built here zero them too (see `expand_masks`) and compaction removes them.

In a ResNet every addition `bn_last(conv_last(.)) + shortcut` couples its two sides: the
last conv/BN of a block, the projection `shortcut_conv`/`shortcut_bn` of the block that
opens the residual stream and, through identity shortcuts, every later block of that stream
and the stem (if the first stage has an identity shortcut) form ONE group, so no addition
mixes a pruned and a kept channel. The classifier `head`'s outputs are never pruned.

`derive_groups` reads the groups off a linen param tree by the naming conventions of
`prospr_jax.models` (`UnknownStructureError` otherwise):

* conv chains (VGG, SmallConvNet): top-level `conv1 ... convN`, each a `ConvBNReLU`
  (`conv/kernel`, `bn/{scale,bias}`), then `head` on globally pooled features. Group `convi/conv`
  = {`convi/conv/kernel`, `convi/bn/scale`, `convi/bn/bias`}, consumed by `conv(i+1)` (the
  last one by `head`).
* ResNets: `stem_conv`, `stem_bn`, blocks `stage{s}_block{b}` with `conv{i}`/`bn{i}`
  (i = 1..2 BasicBlock, 1..3 Bottleneck) and optional `shortcut_conv`/`shortcut_bn`, then
  `head`. A block's inner convs are one group each; its last conv/BN joins the residual
  stream group described above.

Scores (`group_scores`): for the gradient methods, with every member multiplied by its
group's gate `g`, the chain rule gives `dL/dg = Σ_members dL/dc_member` (`c_member` a
channel-shaped mask of that member alone), so the score of a group channel is
`|Σ_members signed gradient|` — computed by `prospr.meta_gradient` (ProsPr, full or
first-order) or `snip.connection_sensitivity` (SNIP, averaged over batches before the
absolute value) with one channel-shaped mask leaf per member. Magnitude is the channel's L1
norm summed over the member kernels (all the kernel weights its gate removes, so channels of
residual streams, with many members, score higher); random is Uniform[0, 1).

"Channel sparsity" is the fraction of all group channels (summed over groups) removed.
`structured_prune` is the one entry point: `derive_groups` -> `group_scores` ->
`select_channels` (global top-k) -> `expand_masks` (a normal bool mask pytree for
`apply_masks`, `keep_masked`, `density_summary`).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.adapters import LinenLoss
from prospr_jax.saliency import objective, prospr, registry, simple, snip
from prospr_jax.saliency.objective import PyTree, StatefulLossFn

ParamPath = tuple[str, ...]
"""Keys of a leaf inside the `params` collection, e.g. `('conv1', 'conv', 'kernel')`."""

OUT_AXIS = -1
"""The axis of a member leaf gated by its group (a kernel's output axis, a BN vector's only one)."""
IN_AXIS = -2
"""The axis of a consumer kernel that reads a group's channels (its input axis)."""

STRUCTURED_METHODS = ("prospr", "prospr_first_order", "snip", "magnitude", "random")
"""Methods `group_scores` / `structured_prune` accept."""

_SUPPORTED = (
    "conv chains (VGG, SmallConvNet: top-level conv1..convN, each with conv/kernel and "
    "bn/{scale,bias}, then a dense 'head' on globally pooled features) and ResNets (stem_conv, "
    "stem_bn, stage{s}_block{b} blocks with conv{i}/bn{i} and optional "
    "shortcut_conv/shortcut_bn, then 'head')"
)


class UnknownStructureError(ValueError):
  """The param tree follows none of the naming conventions `derive_groups` knows."""


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
  """Channels gated by one shared mask.

  Attributes:
    name: the first member's module path, e.g. 'conv3/conv', 'stem_conv',
      'stage2_block0/shortcut_conv', 'stage1_block1/conv1'.
    size: number of channels.
    members: params leaves whose `OUT_AXIS` (last axis) is gated by the group's mask.
    consumers: kernels whose `IN_AXIS` reads the group's channels.
  """

  name: str
  size: int
  members: tuple[ParamPath, ...]
  consumers: tuple[ParamPath, ...]


def get_leaf(tree: Mapping[str, Any], path: ParamPath) -> Any:
  """`tree[path[0]][path[1]]...`."""
  return functools.reduce(operator.getitem, path, tree)


def _conv_bn(conv: ParamPath, bn: ParamPath) -> list[ParamPath]:
  """Members of a bias-free conv followed by BatchNorm: kernel, BN scale, BN bias."""
  return [(*conv, "kernel"), (*bn, "scale"), (*bn, "bias")]


class _GroupBuilder:
  """Collects groups as lists of members and consumers, then checks their sizes."""

  def __init__(self, params: Mapping[str, Any]):
    self.params = params
    self.members: list[list[ParamPath]] = []
    self.consumers: list[list[ParamPath]] = []

  def new(self, members: list[ParamPath]) -> int:
    self.members.append(list(members))
    self.consumers.append([])
    return len(self.members) - 1

  def join(self, group: int, members: list[ParamPath]) -> None:
    self.members[group].extend(members)

  def consume(self, group: int, kernel: ParamPath) -> None:
    self.consumers[group].append(kernel)

  def build(self) -> list[ChannelGroup]:
    groups = []
    for members, consumers in zip(self.members, self.consumers):
      size = get_leaf(self.params, members[0]).shape[OUT_AXIS]
      for path, axis in [(m, OUT_AXIS) for m in members] + [(c, IN_AXIS) for c in consumers]:
        if get_leaf(self.params, path).shape[axis] != size:
          raise UnknownStructureError(
              f"'{'/'.join(path)}' has {get_leaf(self.params, path).shape[axis]} channels on "
              f"axis {axis}, but its channel group '{'/'.join(members[0][:-1])}' has {size} "
              "(e.g. a head on flattened, not pooled, features). Supported: " + _SUPPORTED
          )
      groups.append(ChannelGroup("/".join(members[0][:-1]), size, tuple(members), tuple(consumers)))
    return groups


def _numbered(names: Sequence[str], pattern: str) -> list[tuple[int, ...]]:
  """The integer groups of `pattern` for every name matching it, sorted."""
  return sorted(tuple(map(int, m.groups())) for n in names if (m := re.fullmatch(pattern, n)))


def _check_keys(tree: Mapping[str, Any], expected: set[str], where: str) -> None:
  if set(tree) != expected:
    raise UnknownStructureError(
        f"'{where}' has submodules/leaves {sorted(tree)}, expected {sorted(expected)}. "
        "Supported: " + _SUPPORTED
    )


def _chain_groups(params: Mapping[str, Any]) -> list[ChannelGroup]:
  """Groups of a ConvBNReLU chain `conv1..convN -> head` (VGG, SmallConvNet)."""
  n = len(params) - 1
  builder = _GroupBuilder(params)
  for i in range(1, n + 1):
    _check_keys(params[f"conv{i}"], {"conv", "bn"}, f"conv{i}")
    _check_keys(params[f"conv{i}"]["conv"], {"kernel"}, f"conv{i}/conv")
    _check_keys(params[f"conv{i}"]["bn"], {"scale", "bias"}, f"conv{i}/bn")
    g = builder.new(_conv_bn((f"conv{i}", "conv"), (f"conv{i}", "bn")))
    builder.consume(g, (f"conv{i + 1}", "conv", "kernel") if i < n else ("head", "kernel"))
  return builder.build()


def _block_names(params: Mapping[str, Any]) -> list[str]:
  """`stage{s}_block{b}` names in network order; raises unless stages/blocks are contiguous."""
  numbers = _numbered(list(params), r"stage(\d+)_block(\d+)")
  stages = sorted({s for s, _ in numbers})
  expected = [(s, b) for s in range(1, len(stages) + 1)
              for b in range(sum(1 for t, _ in numbers if t == s))]
  if not numbers or numbers != expected:
    raise UnknownStructureError(
        f"ResNet blocks {[f'stage{s}_block{b}' for s, b in numbers]} are not numbered "
        "stage1.., block0.. without gaps. Supported: " + _SUPPORTED
    )
  return [f"stage{s}_block{b}" for s, b in numbers]


def _resnet_groups(params: Mapping[str, Any]) -> list[ChannelGroup]:
  """Groups of a ResNet: inner conv/BN pairs, and one group per residual stream."""
  builder = _GroupBuilder(params)
  stream = builder.new(_conv_bn(("stem_conv",), ("stem_bn",)))
  for name in _block_names(params):
    block = params[name]
    last = 3 if "conv3" in block else 2
    inner = {f"{p}{i}" for i in range(1, last + 1) for p in ("conv", "bn")}
    projection = "shortcut_conv" in block
    _check_keys(block, inner | ({"shortcut_conv", "shortcut_bn"} if projection else set()), name)
    builder.consume(stream, (name, "conv1", "kernel"))
    for i in range(1, last):
      g = builder.new(_conv_bn((name, f"conv{i}"), (name, f"bn{i}")))
      builder.consume(g, (name, f"conv{i + 1}", "kernel"))
    out = _conv_bn((name, f"conv{last}"), (name, f"bn{last}"))
    if projection:
      builder.consume(stream, (name, "shortcut_conv", "kernel"))
      stream = builder.new(_conv_bn((name, "shortcut_conv"), (name, "shortcut_bn")) + out)
    else:
      widths = block["conv1"]["kernel"].shape[IN_AXIS], get_leaf(params, out[0]).shape[OUT_AXIS]
      if widths[0] != widths[1]:
        raise UnknownStructureError(
            f"'{name}' maps {widths[0]} to {widths[1]} channels without a shortcut_conv: a "
            "parameter-free (option-A, zero-padding) shortcut, e.g. resnet20_prospr, joins its "
            "input channels to only some of its output channels, which channel groups cannot "
            "express. Supported: " + _SUPPORTED
        )
      builder.join(stream, out)
  builder.consume(stream, ("head", "kernel"))
  return builder.build()


def derive_groups(params: Mapping[str, Any]) -> list[ChannelGroup]:
  """The channel groups of a linen param tree of a `prospr_jax.models` conv net.

  Args:
    params: the `params` collection of a VGG, SmallConvNet or ResNet (module docstring).

  Returns:
    The groups in network order; every prunable conv kernel is a member of exactly one
    group, the `head` of none.

  Raises:
    UnknownStructureError: if the tree follows neither convention (e.g. LeNet-5, MLPs, a
      head on flattened features).
  """
  names = set(params)
  if "head" not in names:
    raise UnknownStructureError(f"No 'head' in the params {sorted(names)}. Supported: {_SUPPORTED}")
  if {"stem_conv", "stem_bn"} <= names:
    _check_keys(params, {"stem_conv", "stem_bn", "head", *_block_names(params)}, "params")
    return _resnet_groups(params)
  chain = {f"conv{i}" for i in range(1, len(names))}
  if len(names) > 1 and names == chain | {"head"}:
    return _chain_groups(params)
  raise UnknownStructureError(
      f"Cannot derive channel groups from top-level modules {sorted(names)}. Supported: "
      + _SUPPORTED
  )


def num_channels(groups: Sequence[ChannelGroup]) -> int:
  """Total number of prunable channels: the sum of the group sizes."""
  return sum(g.size for g in groups)


# --- Scores. ------------------------------------------------------------------------------


def _path_keys(path: masks_lib.KeyPath) -> ParamPath:
  return tuple(str(k.key) for k in path)


def _member_axes(groups: Sequence[ChannelGroup]) -> dict[ParamPath, dict[int, str]]:
  """`{leaf path: {axis: group name}}` for every member (OUT_AXIS) and consumer (IN_AXIS)."""
  axes: dict[ParamPath, dict[int, str]] = {}
  for g in groups:
    for path, axis in [(m, OUT_AXIS) for m in g.members] + [(c, IN_AXIS) for c in g.consumers]:
      if axis in axes.setdefault(path, {}):
        raise ValueError(f"'{'/'.join(path)}' is in two channel groups on axis {axis}.")
      axes[path][axis] = g.name
  return axes


def gate_tree(params: PyTree, groups: Sequence[ChannelGroup]) -> PyTree:
  """The mask `c` to differentiate: ones of shape `(1, ..., 1, out)` for members, else `(1,)*ndim`.

  Its gradient at a member leaf is that member's signed per-channel gradient; the
  all-broadcast leaves of non-members are there only because `c` must match the params' tree.
  """
  members = {m for g in groups for m in g.members}

  def make(path: masks_lib.KeyPath, p: jax.Array) -> jax.Array:
    shape = masks_lib.channel_shape(p.shape) if _path_keys(path) in members else (1,) * p.ndim
    return np.ones(shape, p.dtype)

  return jax.tree_util.tree_map_with_path(make, params)


def sum_members(
    groups: Sequence[ChannelGroup],
    tree: PyTree,
    *,
    keep_member: Callable[[ParamPath], bool] = lambda path: True,
) -> dict[str, np.ndarray]:
  """`{group name: Σ over its members of tree[member] (each reshaped to (size,))}`.

  `tree` holds a channel-shaped leaf (`(1, ..., 1, size)` or `(size,)`) at every member;
  `keep_member` restricts the sum (e.g. to kernels).
  """
  return {
      g.name: sum(
          np.asarray(get_leaf(tree, m), np.float64).reshape(g.size)
          for m in g.members if keep_member(m)
      )
      for g in groups
  }


def _abs(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: np.abs(v) for k, v in scores.items()}


def _prospr_batches(batches: PyTree | Sequence[PyTree], num_steps: int) -> list[PyTree]:
  """`num_steps + 1` batches: the given ones, or one batch reused for every step."""
  batches = objective.as_batch_list(batches)
  if len(batches) == 1:
    return batches * (num_steps + 1)
  if len(batches) != num_steps + 1:
    raise ValueError(
        f"ProsPr with num_steps={num_steps} needs {num_steps + 1} batches or a single batch; "
        f"got {len(batches)}."
    )
  return batches


@dataclasses.dataclass(frozen=True)
class _ScoreInputs:
  """What a group scorer may read (which fields a method needs: `_SCORERS[method][1]`)."""

  groups: Sequence[ChannelGroup]
  params: PyTree
  state: PyTree
  loss_fn: StatefulLossFn
  batches: PyTree | Sequence[PyTree] | None
  key: jax.Array | None


def _prospr_scores(
    inputs: _ScoreInputs,
    *,
    first_order: bool,
    num_steps: int = 3,
    optimizer: optax.GradientTransformation = prospr.DEFAULT_INNER_OPTIMIZER,
    remat: bool = False,
) -> dict[str, np.ndarray]:
  """`|Σ_members ∂L(θk(c); Dk)/∂c_member|` through `num_steps` inner optimizer steps."""
  grads = prospr.meta_gradient(
      gate_tree(inputs.params, inputs.groups), inputs.params, inputs.state,
      _prospr_batches(inputs.batches, num_steps), loss_fn=inputs.loss_fn, optimizer=optimizer,
      first_order=first_order, remat=remat,
  )
  return _abs(sum_members(inputs.groups, grads))


def _snip_scores(inputs: _ScoreInputs) -> dict[str, np.ndarray]:
  """`|mean over batches of Σ_members θ ⊙ ∇L|` per channel (connection sensitivity)."""
  c = gate_tree(inputs.params, inputs.groups)
  sens = [
      snip.connection_sensitivity(inputs.params, inputs.state, b, c, loss_fn=inputs.loss_fn)
      for b in objective.as_batch_list(inputs.batches)
  ]
  return _abs(sum_members(inputs.groups, objective.mean_tree(sens)))


def _magnitude_scores(inputs: _ScoreInputs) -> dict[str, np.ndarray]:
  """L1 norm of each channel's output slice, summed over the group's member kernels."""
  l1 = simple.magnitude_scores(inputs.params, structured=True)
  return sum_members(
      inputs.groups, l1, keep_member=lambda m: get_leaf(inputs.params, m).ndim > 1
  )


def _random_scores(inputs: _ScoreInputs) -> dict[str, np.ndarray]:
  """Uniform[0, 1) per channel, group `i` drawn from `fold_in(key, i)`."""
  return {
      g.name: np.asarray(jax.random.uniform(jax.random.fold_in(inputs.key, i), (g.size,)))
      for i, g in enumerate(inputs.groups)
  }


_PROSPR_OPTIONS = ("num_steps", "optimizer", "remat")
# method -> (scorer, the `_ScoreInputs` fields it needs, its option names)
_SCORERS: dict[str, tuple[Callable[..., dict[str, np.ndarray]], tuple[str, ...],
                          tuple[str, ...]]] = {
    "prospr": (functools.partial(_prospr_scores, first_order=False), ("batches",),
               _PROSPR_OPTIONS),
    "prospr_first_order": (functools.partial(_prospr_scores, first_order=True), ("batches",),
                           _PROSPR_OPTIONS),
    "snip": (_snip_scores, ("batches",), ()),
    "magnitude": (_magnitude_scores, (), ()),
    "random": (_random_scores, ("key",), ()),
}


def _check_method(method: str) -> None:
  if method not in _SCORERS:
    raise ValueError(
        f"Method {method!r} has no structured (channel-group) form; use one of "
        f"{list(STRUCTURED_METHODS)}."
    )


def group_scores(
    method: str,
    model: nn.Module,
    variables: PyTree,
    batches: PyTree | Sequence[PyTree] | None = None,
    *,
    key: jax.Array | None = None,
    groups: Sequence[ChannelGroup] | None = None,
    loss_fn: StatefulLossFn | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
  """Non-negative score per channel of every group (higher = keep).

  Args:
    method: one of `STRUCTURED_METHODS`.
    model: the linen model (for the default loss).
    variables: `{'params': ..., 'batch_stats': ...}` at initialization; never modified.
    batches: a batch `{'image', 'label'}` or a list of them (data-dependent methods). ProsPr
      takes `num_steps + 1` batches (or one, reused); SNIP averages over all of them.
    key: PRNG key ('random').
    groups: the channel groups (default `derive_groups(variables['params'])`).
    loss_fn: `loss_fn(params, state, batch) -> (loss, new_state)`; default
      `LinenLoss(model)` (train mode, BatchNorm on batch statistics).
    **options: ProsPr's `num_steps` (3), `optimizer` (SGD 0.1), `remat` (False).

  Returns:
    `{group name: float64 array (size,)}`.
  """
  _check_method(method)
  scorer, needs, accepted = _SCORERS[method]
  registry.check_options(method, options, accepted)
  params = variables["params"]
  masks_lib.check_float_params(params)
  inputs = _ScoreInputs(
      groups=derive_groups(params) if groups is None else groups,
      params=params,
      state={k: v for k, v in variables.items() if k != "params"},
      loss_fn=LinenLoss(model) if loss_fn is None else loss_fn,
      batches=batches,
      key=key,
  )
  missing = [n for n in needs if getattr(inputs, n) is None]
  if missing:
    raise ValueError(f"Structured {method!r} needs {missing}.")
  return scorer(inputs, **options)


# --- Selection and masks. -----------------------------------------------------------------


def _check_allocation(allocation: str) -> None:
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
  _check_allocation(allocation)
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


def expand_masks(
    params: PyTree, groups: Sequence[ChannelGroup], keep: Mapping[str, np.ndarray]
) -> PyTree:
  """A bool mask pytree for `params` from per-group keep-vectors.

  Member kernels get `(1, ..., 1, out)` masks, BN scale/bias `(out,)` masks (the group's
  keep-vector); consumer kernels additionally get their input channels masked (`(1, ..., in,
  out)`, `[in, 1]` for `head`), which does not change the masked network's function (those
  inputs are exactly 0) but makes `density_summary` count the weights that really remain and
  keeps the dead inputs at 0 in training. Every other leaf gets an all-True mask of its full
  shape. Works with `apply_masks`, `keep_masked`, `density_summary` and `save_masks`.
  """
  axes = _member_axes(groups)

  def make(path: masks_lib.KeyPath, p: jax.Array) -> jax.Array:
    by_axis = axes.get(_path_keys(path))
    if by_axis is None:
      return jnp.ones(p.shape, bool)
    mask = np.ones((1,) * p.ndim, bool)
    for axis, name in by_axis.items():
      shape = [1] * p.ndim
      shape[axis] = p.shape[axis]
      mask = mask & np.asarray(keep[name], bool).reshape(shape)
    return jnp.asarray(mask)

  return jax.tree_util.tree_map_with_path(make, params)


def channels_from_masks(
    params: PyTree, groups: Sequence[ChannelGroup], masks: PyTree
) -> dict[str, np.ndarray]:
  """Recovers the per-group keep-vectors from a mask pytree (inverse of `expand_masks`).

  A member's channel counts as kept if any of its entries in that output slice is kept.

  Raises:
    ValueError: if the members of a group disagree (not channel-group masks) or a group
      keeps no channel.
  """
  masks_lib.check_masks(params, masks)
  keep = {}
  for g in groups:
    vectors = []
    for m in g.members:
      full = np.broadcast_to(np.asarray(get_leaf(masks, m), bool), get_leaf(params, m).shape)
      vectors.append(full.reshape(-1, g.size).any(axis=0))
    if not any(v.any() for v in vectors):
      raise ValueError(f"Channel group '{g.name}' keeps no channel.")
    if any(not np.array_equal(v, vectors[0]) for v in vectors):
      raise ValueError(
          f"The masks of channel group '{g.name}' differ between its members "
          f"{['/'.join(m) for m in g.members]}: these are not channel-group masks "
          "(build them with structured_prune)."
      )
    keep[g.name] = vectors[0]
  return keep


def structured_prune(
    method: str,
    model: nn.Module,
    variables: PyTree,
    batches: PyTree | Sequence[PyTree] | None,
    sparsity: float,
    *,
    key: jax.Array | None = None,
    min_kept_per_group: int | None = None,
    allocation: Literal["global", "uniform"] = "global",
    loss_fn: StatefulLossFn | None = None,
    **options: Any,
) -> PyTree:
  """Channel-group masks for `variables['params']` at channel sparsity `sparsity`.

  `derive_groups` -> `group_scores(method, ...)` -> `select_channels` -> `expand_masks`.
  Arguments as in those functions (`options`: ProsPr's `num_steps`, `optimizer`, `remat`).

  Returns:
    A bool mask pytree with the structure of the params (see `expand_masks`).
  """
  _check_method(method)  # the cheap checks before any expensive scoring
  _check_allocation(allocation)
  masks_lib.check_sparsity(sparsity)
  params = variables["params"]
  groups = derive_groups(params)
  scores = group_scores(
      method, model, variables, batches, key=key, groups=groups, loss_fn=loss_fn, **options
  )
  keep = select_channels(
      scores, sparsity, min_kept_per_group=min_kept_per_group, allocation=allocation
  )
  return expand_masks(params, groups, keep)
