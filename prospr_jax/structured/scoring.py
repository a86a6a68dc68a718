"""Channel-group scores: one non-negative score per channel of every group (higher = keep).

For the gradient methods every member axis is multiplied by its group's gate `g`; the chain
rule gives `dL/dg_j = Σ_members Σ_{positions p of channel j} dL/dc_member[p]` with `c_member` a
mask on that member axis alone (ones, `gate_tree`). So the score of a channel is
`|Σ_members signed gradient|`, computed by `prospr.meta_gradient` (ProsPr, full or
first-order) or `snip.connection_sensitivity` (SNIP, averaged over batches before the absolute
value). Magnitude is the channel's L1 norm summed over the member kernels (`ndim > 1`: all the
kernel weights its gate removes); random is Uniform[0, 1) from `fold_in(key, group index)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective, prospr, registry, snip
from prospr_jax.tree_types import PyTree, StatefulLossFn
from prospr_jax.structured.groups import ChannelGroup, Slot

Scores = dict[str, np.ndarray]
"""`{group name: float64 array (size,)}`."""


def flat_leaves(tree: PyTree) -> dict[str, Any]:
  """`{'/'-joined path: leaf}` of a pytree."""
  return {masks_lib.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def member_axes(groups: Sequence[ChannelGroup]) -> dict[str, set[int]]:
  """`{params path: axes}` gated by some group."""
  axes: dict[str, set[int]] = {}
  for g in groups:
    for slot in g.members:
      axes.setdefault(slot.path, set()).add(slot.axis)
  return axes


def gate_tree(params: PyTree, groups: Sequence[ChannelGroup]) -> PyTree:
  """The mask `c` to differentiate: ones, full-size on every member axis and 1 elsewhere.

  A kernel `[kh, kw, in, out]` gated on its output axis gets `(1, 1, 1, out)`; leaves of no
  group get `(1,) * ndim` (only there because `c` must match the params' tree).
  """
  axes = member_axes(groups)

  def make(path: masks_lib.KeyPath, p: jax.Array) -> np.ndarray:
    gated = axes.get(masks_lib.path_str(path), set())
    return np.ones([n if a in gated else 1 for a, n in enumerate(p.shape)], p.dtype)

  return jax.tree_util.tree_map_with_path(make, params)


def channel_sum(slot: Slot, leaf: Any) -> np.ndarray:
  """`(size,)`: `leaf` summed over all axes but `slot.axis`, then over each channel's positions."""
  x = np.asarray(leaf, np.float64)
  per_position = x.sum(axis=tuple(a for a in range(x.ndim) if a != slot.axis))
  return per_position[slot.index].sum(axis=1)


def sum_members(
    groups: Sequence[ChannelGroup],
    leaves: Mapping[str, Any],
    *,
    keep_member: Callable[[Slot], bool] = lambda slot: True,
) -> Scores:
  """`{group name: Σ over its members of channel_sum(member, leaves[member.path])}`.

  `leaves` maps params paths to arrays shaped like `gate_tree`'s leaves (e.g. the flattened
  gradient with respect to `c`); `keep_member` restricts the sum (e.g. to kernels).
  """
  return {
      g.name: sum(channel_sum(m, leaves[m.path]) for m in g.members if keep_member(m))
      for g in groups
  }


def _abs(scores: Scores) -> Scores:
  return {k: np.abs(v) for k, v in scores.items()}


@dataclasses.dataclass(frozen=True)
class ScoreInputs:
  """What a channel scorer may read (which fields a method needs:
  `METHODS[method].channel_scorer.needs`)."""

  groups: Sequence[ChannelGroup]
  params: PyTree
  state: PyTree
  loss_fn: StatefulLossFn
  batches: PyTree | Sequence[PyTree] | None
  key: jax.Array | None


def prospr_channel_scores(
    inputs: ScoreInputs,
    *,
    first_order: bool,
    num_steps: int = 3,
    optimizer: optax.GradientTransformation = prospr.DEFAULT_INNER_OPTIMIZER,
    remat: bool = False,
    unroll: prospr.Unroll | None = None,
) -> Scores:
  """`|Σ_members ∂L(θk(c); Dk)/∂c_member|` through `num_steps` inner optimizer steps (`unroll`:
  the inner loop's form, see `prospr.k_step_loss`)."""
  grads = prospr.meta_gradient(
      gate_tree(inputs.params, inputs.groups), inputs.params, inputs.state,
      prospr.step_batches(inputs.batches, num_steps), loss_fn=inputs.loss_fn, optimizer=optimizer,
      first_order=first_order, remat=remat, unroll=unroll,
  )
  return _abs(sum_members(inputs.groups, flat_leaves(grads)))


def snip_channel_scores(inputs: ScoreInputs) -> Scores:
  """`|mean over batches of Σ_members θ ⊙ ∇L|` per channel (connection sensitivity)."""
  c = gate_tree(inputs.params, inputs.groups)
  sens = [
      snip.connection_sensitivity(inputs.params, inputs.state, b, c, loss_fn=inputs.loss_fn)
      for b in objective.as_batch_list(inputs.batches)
  ]
  return _abs(sum_members(inputs.groups, flat_leaves(objective.mean_tree(sens))))


def magnitude_channel_scores(inputs: ScoreInputs) -> Scores:
  """L1 norm of each channel's slice, summed over the group's member kernels (`ndim > 1`)."""
  params, c = flat_leaves(inputs.params), flat_leaves(gate_tree(inputs.params, inputs.groups))
  kernels = {m.path for g in inputs.groups for m in g.members if np.ndim(params[m.path]) > 1}
  l1 = {path: objective.reduce_to(jnp.abs(params[path]), c[path].shape) for path in kernels}
  return sum_members(inputs.groups, l1, keep_member=lambda m: m.path in kernels)


def random_channel_scores(inputs: ScoreInputs) -> Scores:
  """Uniform[0, 1) per channel, group `i` drawn from `fold_in(key, i)`."""
  return {
      g.name: np.asarray(jax.random.uniform(jax.random.fold_in(inputs.key, i), (g.size,)))
      for i, g in enumerate(inputs.groups)
  }


def check_method(method: str, options: Iterable[str] = ()) -> None:
  """Raises ValueError for a method without a structured form or an option it does not take."""
  if method not in registry.METHODS or registry.METHODS[method].channel_scorer is None:
    raise ValueError(
        f"Method {method!r} has no structured (channel-group) form; use one of "
        f"{list(registry.structured_methods())}."
    )
  registry.check_options(method, options, registry.METHODS[method].options)


def score_groups(method: str, inputs: ScoreInputs, **options: Any) -> Scores:
  """Non-negative score per channel of every group (module docstring).

  Args:
    method: one of `registry.structured_methods()`.
    inputs: groups, params, state, loss, batches (ProsPr: `num_steps + 1` or one, reused;
      SNIP averages over all) and key (random).
    **options: the method's options, e.g. ProsPr's `num_steps` (3), `optimizer` (SGD 0.1),
      `remat` (False).

  Returns:
    `{group name: float64 array (size,)}`.
  """
  check_method(method, options)
  scorer = registry.METHODS[method].channel_scorer
  missing = [n for n in scorer.needs if getattr(inputs, n) is None]
  if missing:
    raise ValueError(f"Structured {method!r} needs {missing}.")
  return scorer.fn(inputs, **options)

