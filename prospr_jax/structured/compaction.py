"""Compaction of any traced model: a physically smaller program with the masked model's outputs.

From channel-group masks, the removed channels' atoms (`tracing`) decide, for every axis of
every value of the traced program, which positions remain. `compact` then

* slices every params and state leaf (and every jaxpr constant) to its remaining positions
  (`slice_variables`);
* re-evaluates the traced jaxpr on the sliced arrays, equation by equation, with the `rewrite`
  of each primitive's rule (`primitive_rule.PrimitiveRule`: the built-in ones rewrite the
  parameters that carry shapes, e.g. of `reshape`, `broadcast_in_dim`, `pad`, `slice`, a
  depthwise conv's `feature_group_count`), inlining nested `jit` / `custom_jvp_call` /
  `custom_vjp_call` / `remat` bodies; every output shape is checked against the expected one.

A pruned channel contributes exactly 0 to what reads it in the masked model (its consumers'
entries are masked, or the tracer proved it zero), so the smaller program's outputs equal the
masked model's up to float rounding. It is a plain JAX function: it can be jitted, and
exported with `jax.export` (custom derivative rules are inlined, so it is meant for
inference). For an NNX model `compact` also merges the sliced state into a smaller module.
`CompactionReport` gives params and multiply-accumulates per example before and after.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prospr_jax import masks as masks_lib
from prospr_jax.structured.channel_masks import channels_from_masks
from prospr_jax.structured.cost import CompactionReport, count_macs, count_params
from prospr_jax.structured.groups import group_roots
from prospr_jax.structured.nested import nested_jaxpr
from prospr_jax.structured.primitive_rule import Kept, compacted_out_shapes
from prospr_jax.structured.prune import Model, TracedModel, trace_model
from prospr_jax.pure_models import NnxApply
from prospr_jax.structured.trace_errors import user_source_line
from prospr_jax.structured.trace_types import ChannelTrace, Labels, Site
from prospr_jax.tree_types import PyTree

_apply_masks = jax.jit(masks_lib.apply_masks)  # one compile instead of one per leaf shape


def kept_positions(trace: ChannelTrace, removed: np.ndarray, labels: Labels) -> Kept:
  """The remaining positions of each axis with these labels (`None`: all of them)."""
  out = []
  for lab in labels:
    gone = None if lab is None else removed[trace.roots[lab]]
    out.append(None if gone is None or not gone.any() else np.flatnonzero(~gone))
  return tuple(out)


def _take(x: Any, kept: Kept) -> Any:
  """`x` restricted to the kept positions of every axis (sliced on the host; `x` itself if
  nothing is removed, e.g. a PRNG key)."""
  if all(index is None for index in kept):
    return x
  x = np.asarray(x)
  for axis, index in enumerate(kept):
    if index is not None:
      x = np.take(x, index, axis=axis)
  return jnp.asarray(x)


@dataclasses.dataclass(frozen=True)
class SlicedVariables:
  """A channel-masked model's trace and its variables restricted to the kept channels.

  Attributes:
    traced: the traced model, its params multiplied by the masks.
    keep: `{group name: bool keep-vector}` (`channels_from_masks`).
    removed: bool per atom, whether its component is a removed channel (indexed by root atom).
    params: the params with every leaf restricted to its remaining positions.
    state: the state, likewise.
  """

  traced: TracedModel
  keep: dict[str, np.ndarray]
  removed: np.ndarray
  params: PyTree
  state: PyTree


def slice_variables(model: Model, variables: PyTree | None, masks: PyTree,
                    example_input: Any) -> SlicedVariables:
  """Traces `model` on one example of `example_input`, masks its params and slices every
  leaf to the channels the masks keep (arguments as in `compact`).

  Raises:
    TypeError: if a mask leaf is not bool.
    ValueError: if the masks are not channel-group masks (e.g. they prune single weights) or a
      group keeps no channel (`channels_from_masks`).
  """
  traced = trace_model(model, variables, one_example(example_input))
  keep = channels_from_masks(traced.params, traced.groups, masks)
  traced = dataclasses.replace(traced, params=_apply_masks(traced.params, masks))
  trace = traced.trace
  removed = np.zeros(len(trace.roots), bool)
  for g in traced.groups:
    removed[group_roots(trace, g)[~np.asarray(keep[g.name], bool)]] = True
  sliced = []
  for tree, offset in ((traced.params, 0), (traced.state, trace.num_params)):
    leaves, treedef = jax.tree.flatten(tree)
    sliced.append(jax.tree.unflatten(treedef, [
        _take(x, kept_positions(trace, removed, trace.leaves[offset + i].atoms))
        for i, x in enumerate(leaves)]))
  return SlicedVariables(traced, keep, removed, *sliced)


def one_example(x: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of a batch of one, shaped like the batch `x` (any pytree)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *np.shape(a)[1:]), a.dtype), x)


# --- The smaller program. ---------------------------------------------------------------------


class CompactProgram:
  """`program(params, state, x)`: the jaxpr of one example re-evaluated on the sliced arrays,
  vmapped over the batch (any batch size, symbolic ones included; the model's outputs must
  keep the batch as their leading axis).

  Args:
    trace: the channel trace of the model on a batch of one (`one_example`); its `rules`
      rewrite the equations.
    removed: bool per atom, whether its component is removed (`SlicedVariables.removed`).
  """

  def __init__(self, trace: ChannelTrace, removed: np.ndarray):
    self.channels = trace
    self.removed = removed

  def kept(self, site: Site, var: Any) -> Kept:
    """The remaining positions of every axis of `var`, a value of the jaxpr at `site`."""
    if isinstance(var, jex.core.Literal):
      return (None,) * np.ndim(var.val)
    return kept_positions(self.channels, self.removed, self.channels.labels[(site, var)])

  def __call__(self, params: PyTree, state: PyTree, x: Any) -> Any:
    leaves = jax.tree.leaves(params) + jax.tree.leaves(state)

    def single(example: Any) -> Any:
      args = leaves + [a[None] for a in jax.tree.leaves(example)]
      outs = self.run(self.channels.jaxpr.jaxpr, self.channels.jaxpr.consts, args, ())
      return jax.tree.unflatten(self.channels.treedefs[3], [o[0] for o in outs])

    return jax.vmap(single)(x)

  def run(self, jaxpr: jex.core.Jaxpr, consts: Sequence[Any], args: Sequence[Any],
          site: Site) -> list[Any]:
    """Evaluates the compacted `jaxpr` (at `site`) on compacted arguments."""
    env: dict[Any, Any] = {}
    for var, const in zip(jaxpr.constvars, consts):
      atoms = self.channels.leaves[self.channels.consts[(site, var)]].atoms
      env[var] = _take(const, kept_positions(self.channels, self.removed, atoms))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex.core.Literal) else env[v]
    for i, eqn in enumerate(jaxpr.eqns):
      ins = [read(v) for v in eqn.invars]
      body = nested_jaxpr(eqn)
      if body is not None:
        outs = self.run(*body, ins, site + (i,))
      else:
        kept_in = [self.kept(site, v) for v in eqn.invars]
        kept_out = [self.kept(site, v) for v in eqn.outvars]
        outs = self.channels.rules[eqn.primitive.name].rewrite(eqn, ins, kept_in, kept_out)
        self._check(eqn, outs, compacted_out_shapes(eqn, kept_out))
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  @staticmethod
  def _check(eqn: jex.core.JaxprEqn, outs: list[Any], expected: list[tuple[int, ...]]) -> None:
    got = [tuple(np.shape(o)) for o in outs]
    if got != expected:
      raise RuntimeError(
          f"Compaction of '{eqn.primitive.name}' at {user_source_line([eqn])} gave shapes {got}, "
          f"expected {expected}: its channel rule (propagate or rewrite) is wrong."
      )


# --- The entry point. -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CompactModel:
  """The compacted model.

  Attributes:
    apply: `apply(params, state, x)`, the smaller program (eval mode; jittable, exportable).
    params: the sliced params (the original tree structure, smaller leaves).
    state: the sliced state.
    report: sizes before and after.
    module: for an NNX model, a smaller module holding the sliced params and state.
  """

  apply: CompactProgram
  params: PyTree
  state: PyTree
  report: CompactionReport
  module: nnx.Module | None = None

  @functools.cached_property
  def _jitted(self) -> Callable[[PyTree, PyTree, Any], Any]:
    return jax.jit(self.apply)

  def __call__(self, x: Any) -> Any:
    """`apply(params, state, x)`, jitted."""
    return self._jitted(self.params, self.state, x)


def _resize_nnx_layers(module: nnx.Module) -> None:
  """Updates the size attributes of flax's built-in layers to their (sliced) params."""
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Linear):
      node.in_features, node.out_features = node.kernel.get_value().shape
    elif isinstance(node, nnx.Conv):
      kernel = node.kernel.get_value().shape
      multiplier = node.out_features // node.feature_group_count
      node.feature_group_count = kernel[-1] // multiplier if node.feature_group_count > 1 else 1
      node.in_features, node.out_features = kernel[-2] * node.feature_group_count, kernel[-1]
      node.kernel_shape = kernel
    elif isinstance(node, (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm)):
      node.num_features = node.mean.get_value().shape[-1] if isinstance(node, nnx.BatchNorm) else (
          node.num_features if node.scale is None else node.scale.get_value().shape[-1])


def compact(model: Model, variables: PyTree | None, masks: PyTree, example_input: Any
            ) -> CompactModel:
  """The compacted model of a channel-masked one (module docstring).

  Args:
    model, variables: as in `structured_prune` (linen + variables, NNX + None, or
      `apply_fn(params, x)` + params), e.g. after masked training.
    masks: channel-group masks for the params (`structured_prune`); the params are
      multiplied by them first.
    example_input: an input batch (array or `jax.ShapeDtypeStruct`, batch axis first); the
      model is traced on one example of that shape and the program is vmapped over the batch.

  Returns:
    `CompactModel` whose `apply(params, state, x)` equals the masked model's eval-mode outputs.

  Raises:
    TypeError: if a mask leaf is not bool.
    ValueError: if the masks are not channel-group masks (e.g. unstructured masks from
      `pj.prune`, which prune single weights; the error names the first such leaf) or a
      group keeps no channel.
  """
  sliced = slice_variables(model, variables, masks, example_input)
  traced = sliced.traced
  program = CompactProgram(traced.trace, sliced.removed)
  report = CompactionReport(
      params_before=count_params(traced.params), params_after=count_params(sliced.params),
      macs_before=count_macs(traced.pure.apply, traced.params, traced.state, example_input),
      macs_after=count_macs(program, sliced.params, sliced.state, example_input),
  )
  module = None
  if isinstance(traced.pure.apply, NnxApply):
    module = nnx.merge(traced.pure.apply.graphdef, sliced.params, sliced.state)
    _resize_nnx_layers(module)
  return CompactModel(program, sliced.params, sliced.state, report, module)
