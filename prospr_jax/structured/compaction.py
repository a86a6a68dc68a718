"""Compaction of any traced model: a physically smaller program with the masked model's outputs.

From channel-group masks, the removed channels' atoms (`tracing`) decide, for every axis of
every value of the traced program, which positions remain. `compact` then

* slices every params and state leaf (and every jaxpr constant) to its remaining positions;
* re-evaluates the traced jaxpr on the sliced arrays, equation by equation, rewriting the
  parameters of the primitives that carry shapes (`reshape`, `broadcast_in_dim`, `iota`,
  `pad`, `slice`, `split`, a depthwise conv's `feature_group_count`) and inlining nested
  `jit` / `custom_jvp_call` / `custom_vjp_call` / `remat` bodies; every output shape is
  checked against the expected one.

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
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from prospr_jax.ops import conv_ops
from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree
from prospr_jax.structured.groups import group_roots
from prospr_jax.structured.channel_masks import channels_from_masks
from prospr_jax.structured.pure_models import NnxApply
from prospr_jax.structured.prune import Model, TracedModel, trace_model
from prospr_jax.structured.tracing import (
    NESTED, ChannelTrace, Labels, Site, conv_layout, user_source_line)

Kept = tuple[np.ndarray | None, ...]
"""Per axis: the remaining positions, or `None` if all remain."""


_apply_masks = jax.jit(masks_lib.apply_masks)  # one compile instead of one per leaf shape


def apply_channel_masks(traced: TracedModel, masks: PyTree
                        ) -> tuple[TracedModel, dict[str, np.ndarray]]:
  """`traced` with its params multiplied by `masks`, and each group's keep-vector.

  Raises:
    ValueError: if the masks are not channel-group masks or a group keeps no channel.
  """
  params = _apply_masks(traced.params, masks)
  keep = channels_from_masks(params, traced.groups, masks)
  return dataclasses.replace(traced, params=params), keep


def removed_atoms(traced: TracedModel, keep: dict[str, np.ndarray]) -> np.ndarray:
  """Bool per atom: whether its component is a removed channel (indexed by root atom)."""
  removed = np.zeros(len(traced.trace.roots), bool)
  for g in traced.groups:
    removed[group_roots(traced.trace, g)[~np.asarray(keep[g.name], bool)]] = True
  return removed


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


def _compact_shape(shape: Sequence[int], kept: Kept) -> tuple[int, ...]:
  return tuple(n if k is None else len(k) for n, k in zip(shape, kept))


def slice_leaves(traced: TracedModel, removed: np.ndarray) -> tuple[PyTree, PyTree]:
  """`(params, state)` with every leaf restricted to its remaining positions."""
  trace = traced.trace
  out = []
  for tree, offset in ((traced.params, 0), (traced.state, trace.num_params)):
    leaves, treedef = jax.tree.flatten(tree)
    sliced = [_take(x, kept_positions(trace, removed, trace.leaves[offset + i].atoms))
              for i, x in enumerate(leaves)]
    out.append(jax.tree.unflatten(treedef, sliced))
  return tuple(out)


# --- The smaller program. ---------------------------------------------------------------------


Rewrite = Callable[[jex.core.JaxprEqn, list[Any], list[Kept], list[Kept]], list[Any]]
"""`rewrite(eqn, inputs, kept of each input, kept of each output) -> outputs`: one equation of
the smaller program."""
ParamRule = Callable[[jex.core.JaxprEqn, list[Any], list[Kept], list[Kept]], Any]
"""The same arguments, returning one new parameter value of the equation."""


def _shapes(eqn: jex.core.JaxprEqn, kept: list[Kept]) -> list[tuple[int, ...]]:
  """The compacted shapes of `eqn`'s outputs."""
  return [_compact_shape(v.aval.shape, k) for v, k in zip(eqn.outvars, kept)]


def _positions_in(kept: np.ndarray | None, wanted: np.ndarray) -> np.ndarray:
  """Indices, in the compacted axis, of the original positions `wanted` (all of them kept)."""
  return wanted if kept is None else np.searchsorted(kept, wanted)


def _take_axis(x: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
  """`x`'s entries at the constant `index` along `axis` (a slice when contiguous)."""
  if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
    return lax.slice_in_dim(x, int(index[0]), int(index[0]) + len(index), axis=axis)
  return jnp.take(x, jnp.asarray(index, jnp.int32), axis=axis)


def _slice(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
           kept_out: list[Kept]) -> list[Any]:
  """`slice`: the original slice on untouched axes, a constant gather on pruned ones."""
  (x,), (k_in,), (k_out,) = ins, kept_in, kept_out
  shape = eqn.invars[0].aval.shape
  p = eqn.params
  strides = p["strides"] or (1,) * len(shape)
  starts, limits, steps, takes = [], [], [], []
  for a, (s, e, step) in enumerate(zip(p["start_indices"], p["limit_indices"], strides)):
    if k_in[a] is None:
      starts.append(s), limits.append(e), steps.append(step)
      continue
    starts.append(0), limits.append(x.shape[a]), steps.append(1)
    wanted = np.arange(s, e, step)
    wanted = wanted if k_out[a] is None else wanted[k_out[a]]
    takes.append((a, _positions_in(k_in[a], wanted)))
  y = lax.slice(x, starts, limits, steps)
  for a, index in takes:
    y = _take_axis(y, index, a)
  return [y]


def _pad(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
         kept_out: list[Kept]) -> list[Any]:
  """`pad`: on a pruned axis, the low/high padding shrinks to the remaining padded positions."""
  config = []
  n_in = eqn.invars[0].aval.shape
  for a, (lo, hi, interior) in enumerate(eqn.params["padding_config"]):
    lo, hi, interior = int(lo), int(hi), int(interior)
    k_in, k_out = kept_in[0][a], kept_out[0][a]
    if k_in is None and k_out is None:
      config.append((lo, hi, interior))
      continue
    n_out = eqn.outvars[0].aval.shape[a]
    out_kept = np.zeros(n_out, bool)
    out_kept[np.arange(n_out) if k_out is None else k_out] = True
    in_kept = np.zeros(n_in[a], bool)
    in_kept[np.arange(n_in[a]) if k_in is None else k_in] = True
    new_lo = int(out_kept[:lo].sum()) if lo >= 0 else -int(in_kept[:-lo].sum())
    new_hi = int(out_kept[n_out - hi:].sum()) if hi >= 0 else -int(in_kept[n_in[a] + hi:].sum())
    config.append((new_lo, new_hi, interior))
  return [eqn.primitive.bind(*ins, padding_config=tuple(config))]


def _with(**rewrites: ParamRule) -> Rewrite:
  """A rewrite binding the primitive with some parameters replaced (computed by `rewrites`)."""

  def bind(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
           kept_out: list[Kept]) -> list[Any]:
    params = {**eqn.params, **{k: f(eqn, ins, kept_in, kept_out) for k, f in rewrites.items()}}
    out = eqn.primitive.bind(*ins, **params)
    return out if eqn.primitive.multiple_results else [out]

  return bind


def _out_shape(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
               kept_out: list[Kept]) -> tuple[int, ...]:
  """`shape` / `new_sizes`: the compacted output shape."""
  return _shapes(eqn, kept_out)[0]


def _split_sizes(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                 kept_out: list[Kept]) -> tuple[int, ...]:
  """`split`'s `sizes`: the compacted outputs' sizes along the split axis."""
  return tuple(s[eqn.params["axis"]] for s in _shapes(eqn, kept_out))


def _feature_groups(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                    kept_out: list[Kept]) -> int:
  """A depthwise conv keeps one group per remaining input channel."""
  groups = eqn.params["feature_group_count"]
  channels_axis = eqn.params["dimension_numbers"].lhs_spec[1]
  if groups > 1 and groups == eqn.invars[0].aval.shape[channels_axis]:
    return ins[0].shape[channels_axis]
  return groups


_REWRITES: dict[str, Rewrite] = {
    "reshape": _with(new_sizes=_out_shape),
    "broadcast_in_dim": _with(shape=_out_shape),
    "iota": _with(shape=_out_shape),
    "split": _with(sizes=_split_sizes),
    "conv_general_dilated": _with(feature_group_count=_feature_groups),
    "slice": _slice,
    "pad": _pad,
}


def one_example(x: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of a batch of one, shaped like the batch `x` (any pytree)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *np.shape(a)[1:]), a.dtype), x)


class CompactProgram:
  """`program(params, state, x)`: the jaxpr of one example re-evaluated on the sliced arrays,
  vmapped over the batch (any batch size, symbolic ones included; the model's outputs must
  keep the batch as their leading axis).

  Args:
    trace: the channel trace of the model on a batch of one (`one_example`).
    removed: bool per atom, whether its component is removed (`removed_atoms`).
  """

  def __init__(self, trace: ChannelTrace, removed: np.ndarray):
    self.channels = trace
    self.removed = removed

  def kept(self, site: Site, var: Any) -> Kept:
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
    env: dict[Any, Any] = {}
    for var, const in zip(jaxpr.constvars, consts):
      atoms = self.channels.leaves[self.channels.consts[(site, var)]].atoms
      env[var] = _take(const, kept_positions(self.channels, self.removed, atoms))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex.core.Literal) else env[v]
    for i, eqn in enumerate(jaxpr.eqns):
      ins = [read(v) for v in eqn.invars]
      inner_site = site + (i,)
      name = eqn.primitive.name
      if name in NESTED:
        inner = eqn.params[NESTED[name]]
        inner_jaxpr, inner_consts = ((inner.jaxpr, inner.consts) if hasattr(inner, "consts")
                                     else (inner, ()))
        outs = self.run(inner_jaxpr, inner_consts, ins, inner_site)
      else:
        kept_in = [self.kept(site, v) for v in eqn.invars]
        kept_out = [self.kept(site, v) for v in eqn.outvars]
        outs = _REWRITES.get(name, _with())(eqn, ins, kept_in, kept_out)
        self._check(eqn, outs, _shapes(eqn, kept_out))
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  @staticmethod
  def _check(eqn: jex.core.JaxprEqn, outs: list[Any], expected: list[tuple[int, ...]]) -> None:
    got = [tuple(np.shape(o)) for o in outs]
    if got != expected:
      raise RuntimeError(
          f"Compaction of '{eqn.primitive.name}' at {user_source_line([eqn])} gave shapes {got}, "
          f"expected {expected}: a channel rule of prospr_jax.structured.tracing is wrong."
      )


# --- Cost, and the entry point. ---------------------------------------------------------------


def _eqn_macs(eqn: jex.core.JaxprEqn) -> int:
  out = eqn.outvars[0].aval.shape
  if eqn.primitive.name in ("conv_general_dilated", conv_ops.conv_p.name):
    kernel = eqn.invars[1].aval.shape
    out_features = kernel[conv_layout(eqn)[0].rhs_spec[0]]
    return math.prod(out) * math.prod(kernel) // out_features
  if eqn.primitive.name == "dot_general":
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(out) * math.prod(lhs[a] for a in lc)
  return 0


def jaxpr_macs(jaxpr: jex.core.Jaxpr) -> int:
  """Multiply-accumulates of every convolution (`conv_general_dilated`, `conv_ops`'
  `prospr_conv`) and `dot_general` (nested included)."""
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_macs(eqn)
    for sub in jex.core.jaxprs_in_params(eqn.params):
      total += jaxpr_macs(sub)
  return total


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
  """MACs per example of `fn(*args)`: convs and dot products, divided by the batch size (the
  leading axis of the last argument, the input). Counted from shapes (`jax.make_jaxpr`)."""
  batch = jax.tree.leaves(args[-1])[0].shape[0]
  return jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr) // batch


def count_params(params: PyTree) -> int:
  """Number of entries of all leaves of `params`."""
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class CompactionReport:
  """Params and multiply-accumulates per example (convs, dot products) before and after."""

  params_before: int
  params_after: int
  macs_before: int
  macs_after: int


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
    ValueError: if the masks are not channel-group masks or a group keeps no channel.
  """
  traced, keep = apply_channel_masks(
      trace_model(model, variables, one_example(example_input)), masks)
  removed = removed_atoms(traced, keep)
  small_params, small_state = slice_leaves(traced, removed)
  program = CompactProgram(traced.trace, removed)
  report = CompactionReport(
      params_before=count_params(traced.params), params_after=count_params(small_params),
      macs_before=count_macs(traced.pure.apply, traced.params, traced.state, example_input),
      macs_after=count_macs(program, small_params, small_state, example_input),
  )
  module = None
  if isinstance(traced.pure.apply, NnxApply):
    module = nnx.merge(traced.pure.apply.graphdef, small_params, small_state)
    _resize_nnx_layers(module)
  return CompactModel(program, small_params, small_state, report, module)
