"""PX, Path eXclusion (Iurada et al., CVPR 2024): data-driven path-kernel pruning of ReLU nets.

PX bounds the NTK's trace by a sum over the network's input-output paths and scores each weight
by its share of that bound. Per round, three copies of the masked network (masks `m`) run:

  1. the network itself, BatchNorm in eval mode, on each data batch `x`, to record which
     ReLUs are active (`pre-activation > 0`);
  2. a *gated linear* copy: weights set to 1, every ReLU replaced by its recorded 0/1 pattern,
     on `x²`, giving `z1` (a constant of the gradient);
  3. a *linear* copy: weights squared, ReLUs removed, on an all-ones input, giving `z2(q)`.

    R = Σ z1 ⊙ z2,   score = |Σ_batches ∂R/∂q| ⊙ θ²   (q: the parameters of copy 3)

and rounds prune to kept fraction `(1 − sparsity)^(t / T)`. ReLUs are replaced by rewriting
the traced program (`relu_rewrite`), so any ReLU model works without cooperation; a model
without ReLU raises `relu_rewrite.NoReluError`.

Follows the authors' code (iurada/px-ntk-pruning at ed6c40e, `lib/pruners.py`, class `PX`);
where it departs from the paper's description the code is followed:
  * copies 2 and 3 keep BatchNorm's parameters and the classifier layer (`'bn'` and `'fc'` in
    the parameter name) as they are: neither set to 1 nor squared. Here the same leaves are
    chosen by structure (`authors_unchanged`): leaves of layers without a prunable kernel
    (normalization layers) and the layer whose kernel the program uses last (the classifier);
  * in copy 2 the biases of the other layers are set to 1 (like the weights), in copy 3 squared;
  * copies 2 and 3 run BatchNorm in train mode (batch statistics, gradient through them), the
    activation-recording copy in eval mode; pass `copy_apply_fn` for the copies' mode;
  * the gradient is summed over batches before its absolute value is taken, and is taken with
    respect to copy 3's parameters (`θ²`, or `θ` for the unchanged leaves);
  * the data: a class-balanced subset (`examples_per_class` per class, in batches of 128); the
    caller passes the batches here.
The authors' CIFAR-10 script (`launch_scripts/cifar10.sh`) prunes in 100 rounds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective, relu_rewrite
from prospr_jax.saliency.precision import float64_scope
from prospr_jax.saliency.snip import SelectFn, kept_fraction_schedule
from prospr_jax.saliency.synflow import ApplyFn
from prospr_jax.tree_types import PyTree


_RELAYOUTS = {"convert_element_type", "copy", "reshape", "transpose", "squeeze", "expand_dims",
              "broadcast_in_dim"}


def _first_uses(jaxpr: jcore.Jaxpr, prefix: tuple[int, ...] = ()) -> dict:
  """For each variable read by `jaxpr`, the position (equation indices, nested into calls)
  of the first equation that computes with it; casts and reshapes of a variable count as the
  variable itself."""
  first: dict = {}
  origin: dict = {}  # output of a cast or reshape -> the variable it re-lays out
  for i, eqn in enumerate(jaxpr.eqns):
    reads = [origin.get(v, v) for v in eqn.invars if isinstance(v, jcore.Var)]
    if eqn.primitive.name in _RELAYOUTS and len(reads) == 1:
      origin[eqn.outvars[0]] = reads[0]
      continue
    body = relu_rewrite.call_body(eqn)
    inner = _first_uses(body[0], prefix + (i,)) if body else {}
    inner_invars = body[0].invars if body and len(body[0].invars) == len(eqn.invars) else ()
    for j, var in enumerate(eqn.invars):
      if not isinstance(var, jcore.Var):
        continue
      root = origin.get(var, var)
      position = inner.get(inner_invars[j], prefix + (i,)) if inner_invars else prefix + (i,)
      first[root] = min(first.get(root, position), position)
  return first


def output_layer(apply_fn: ApplyFn, params: PyTree, x: jax.Array,
                 filter_fn: masks_lib.FilterFn = masks_lib.default_filter) -> tuple:
  """The key path of the layer (the parent of a prunable leaf) whose prunable leaf the traced
  `apply_fn(params, x)` reads last: the classifier of a feed-forward network.

  Raises:
    ValueError: no prunable leaf is read, or several are first read by the same operation.
  """
  jaxpr = jax.make_jaxpr(apply_fn)(params, x).jaxpr
  first = _first_uses(jaxpr)
  paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  used = [(first[var], path) for var, path, leaf in
          zip(jaxpr.invars, paths, jax.tree.leaves(params))
          if filter_fn(path, leaf) and var in first]
  if not used:
    raise ValueError("apply_fn reads no prunable leaf of params.")
  used.sort(key=lambda u: u[0])
  if len(used) > 1 and used[-1][0] == used[-2][0]:
    raise ValueError(
        f"Cannot tell the output layer: '{masks_lib.path_str(used[-1][1])}' and "
        f"'{masks_lib.path_str(used[-2][1])}' are first read by the same operation. Pass "
        "unchanged_fn to say which leaves the linear copies keep.")
  return used[-1][1][:-1]


def authors_unchanged(apply_fn: ApplyFn, params: PyTree, x: jax.Array,
                      filter_fn: masks_lib.FilterFn = masks_lib.default_filter) -> PyTree:
  """Bool pytree like `params`: the leaves PX's linear copies keep as they are (module
  docstring): those of layers holding no prunable leaf (e.g. BatchNorm's scale and bias) and
  those of the output layer (`output_layer`). A layer is a leaf's parent in the tree.

  Raises:
    ValueError: all leaves share one parent, so layers cannot be told apart.
  """
  with_path = jax.tree_util.tree_leaves_with_path(params)
  if len({path[:-1] for path, _ in with_path}) < 2:
    raise ValueError(
        "PX keeps normalization and classifier parameters unchanged, found by layer, but all "
        "params sit in one flat container. Nest them by layer ({'layer': {'kernel': ...}}) or "
        "pass unchanged_fn.")
  weighted = {path[:-1] for path, leaf in with_path if filter_fn(path, leaf)}
  head = output_layer(apply_fn, params, x, filter_fn)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[:-1] not in weighted or path[:-1] == head, params)


def _gated(apply_fn: ApplyFn, gates: list[jax.Array]) -> ApplyFn:
  """`apply_fn` with its k-th ReLU replaced by multiplication with `gates[k]`."""
  remaining = iter(gates)

  def gate(v: jax.Array) -> jax.Array:
    g = next(remaining, None)
    if g is None or g.shape != v.shape:
      raise ValueError(
          "apply_fn and copy_apply_fn trace different ReLUs; PX gates the copy's ReLUs with "
          "the network's activation patterns, so both must be the same model.")
    return v * g.astype(v.dtype)

  def gated(params: PyTree, x: jax.Array) -> jax.Array:
    out = relu_rewrite.rewrite_relus(apply_fn, gate, batch_size=x.shape[0])(params, x)
    if next(remaining, None) is not None:
      raise ValueError("copy_apply_fn has fewer ReLUs than apply_fn; they must be one model.")
    return out

  return gated


def activation_patterns(apply_fn: ApplyFn, params: PyTree, x: jax.Array) -> list[jax.Array]:
  """`[pre-activation > 0]` of each ReLU of `apply_fn(params, x)`, in program order (ReLUs:
  `max(v, 0)` on arrays `v` with `x`'s batch axis first)."""
  patterns: list[jax.Array] = []

  def record(v: jax.Array) -> jax.Array:
    patterns.append(v > 0)
    return jnp.maximum(v, 0)

  relu_rewrite.rewrite_relus(apply_fn, record, batch_size=x.shape[0])(params, x)
  return patterns


@functools.partial(jax.jit, static_argnames=("apply_fn", "copy_apply_fn"))
def path_kernel_gradient(
    params: PyTree, masks: PyTree, unchanged: PyTree, x: jax.Array, *,
    apply_fn: ApplyFn, copy_apply_fn: ApplyFn,
) -> PyTree:
  """`∂R/∂q` of one batch `x` (module docstring), at `q` = the squared copy's parameters."""
  c = jax.tree.map(lambda m, p: jnp.asarray(m, p.dtype), masks, params)
  gates = activation_patterns(apply_fn, objective.masked(params, c), x)
  ones = jax.tree.map(lambda p, u: jnp.where(u, p, jnp.ones_like(p)), params, unchanged)
  z1 = jax.lax.stop_gradient(_gated(copy_apply_fn, gates)(objective.masked(ones, c), x**2))
  linear = relu_rewrite.rewrite_relus(copy_apply_fn, lambda v: v, batch_size=x.shape[0])

  def path_sum(q: PyTree) -> jax.Array:
    return jnp.sum(z1 * linear(objective.masked(q, c), jnp.ones_like(x)))

  squared = jax.tree.map(lambda p, u: jnp.where(u, p, p**2), params, unchanged)
  return jax.grad(path_sum)(squared)


def _inputs(batches: PyTree | Sequence[PyTree]) -> list[jax.Array]:
  """The input arrays of a batch or list of batches (arrays, or dicts with an 'image')."""
  return [b["image"] if isinstance(b, dict) else b for b in objective.as_batch_list(batches)]


def px_scores(
    apply_fn: ApplyFn,
    params: PyTree,
    masks: PyTree,
    batches: PyTree | Sequence[PyTree],
    *,
    unchanged: PyTree,
    copy_apply_fn: ApplyFn | None = None,
) -> PyTree:
  """One round of PX scores `|Σ_batches ∂R/∂q| ⊙ θ²` at the current `masks`.

  Args:
    apply_fn: `apply_fn(params, x) -> outputs`, BatchNorm in eval mode (records activations).
    params: the network's params.
    masks: current masks (bool), broadcastable to the params.
    batches: a batch or list of batches: input arrays or dicts with an 'image' array.
    unchanged: bool pytree like `params`, the leaves the linear copies keep
      (`authors_unchanged`).
    copy_apply_fn: the same model for the linear copies (authors: BatchNorm in train mode);
      None uses `apply_fn`.

  Returns:
    Scores with the params' structure; pruned weights score 0.
  """
  copy_apply_fn = apply_fn if copy_apply_fn is None else copy_apply_fn
  grads = [path_kernel_gradient(params, masks, unchanged, x, apply_fn=apply_fn,
                                copy_apply_fn=copy_apply_fn) for x in _inputs(batches)]
  return jax.tree.map(lambda p, *gs: jnp.abs(sum(gs)) * p**2, params, *grads)


def px_masks(
    apply_fn: ApplyFn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    sparsity: float,
    select: SelectFn,
    *,
    copy_apply_fn: ApplyFn | None = None,
    num_rounds: int = 100,
    unchanged_fn: masks_lib.FilterFn | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
    float64: bool = False,
) -> PyTree:
  """Iterative PX: `num_rounds` rounds of `px_scores` and pruning, kept fraction
  `(1 − sparsity)^(t / T)` after round t. Returns bool masks at `sparsity`.

  Args:
    apply_fn: `apply_fn(params, x) -> outputs` with BatchNorm in eval mode, e.g.
      `LinenApply(model, state)`; must contain ReLUs.
    params: the initial params.
    batches: data batches (arrays or dicts with 'image'), e.g. a class-balanced subset.
    sparsity: final fraction of prunable weights removed.
    select: `select(scores, sparsity, eligible=None) -> masks`.
    copy_apply_fn: the model for the two linear copies; the authors' runs BatchNorm in train
      mode (`LinenApply(model, state, 'train')`); None uses `apply_fn`.
    num_rounds: T (authors' CIFAR-10 script: 100).
    unchanged_fn: `unchanged_fn(path, leaf) -> bool`, the leaves the linear copies keep as
      they are; None: `authors_unchanged` (normalization layers and the output layer).
    filter_fn: the prunable leaves (used to find layers and the output layer).
    float64: score in float64.
  """
  with float64_scope(float64) as cast:
    params, inputs = cast(params), cast(_inputs(batches))
    unchanged = (authors_unchanged(apply_fn, params, inputs[0], filter_fn)
                 if unchanged_fn is None else masks_lib.prunable_tree(params, unchanged_fn))
    current = masks_lib.ones_masks(params, dtype=bool)
    for round_sparsity in kept_fraction_schedule(sparsity, num_rounds):
      scores = px_scores(apply_fn, params, current, inputs, unchanged=unchanged,
                         copy_apply_fn=copy_apply_fn)
      current = select(scores, round_sparsity, eligible=current)
  return current
