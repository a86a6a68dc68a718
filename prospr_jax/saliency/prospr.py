"""ProsPr (Alizadeh et al., ICLR 2022): saliency from a meta-gradient through k training steps.

With a multiplicative mask `c` on the params, `θ0 = c ⊙ θinit`; `k` optax updates on batches
`D0..D(k-1)` give `θk(c)`; the saliency is `|∂L(θk(c); Dk) / ∂c|` at `c = 1`. All params
(biases, BatchNorm affine) are updated by the inner optimizer; model state (BatchNorm
statistics) is threaded through the inner steps and discarded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree, StatefulLossFn

DEFAULT_INNER_OPTIMIZER = optax.sgd(0.1)
"""The inner optimizer of the authors' code: plain SGD, learning rate 0.1."""


def _inner_step(
    loss_fn: StatefulLossFn,
    optimizer: optax.GradientTransformation,
    first_order: bool,
    params: PyTree,
    opt_state: PyTree,
    state: PyTree,
    batch: PyTree,
) -> tuple[PyTree, PyTree, PyTree]:
  """One optax update of `params` on `batch`; returns (params, opt_state, state)."""
  grads, state = jax.grad(loss_fn, has_aux=True)(params, state, batch)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  if first_order:
    updates = jax.lax.stop_gradient(updates)
  return optax.apply_updates(params, updates), opt_state, state


def _zero_like_scalar_of(tree: PyTree) -> jax.Array:
  """An exact 0.0 that data-depends on `tree` (on its first floating leaf; never NaN)."""
  leaf = next(x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating))
  x = leaf.ravel()[0]
  return 0.0 * jnp.where(jnp.isfinite(x), x, 0.0)


def fusion_barrier(tree: PyTree, zero: jax.Array) -> PyTree:
  """`tree`, materialized as it is: XLA may not fuse its producers into its consumers.

  What `lax.optimization_barrier` means, but XLA:CPU removes that before fusion. Without a
  barrier, XLA:CPU fused the chain of cotangent sums across remat steps into one sum at the end,
  which kept every step's terms live: two params-sized buffers per inner step of ProsPr with
  SGD on SmallConvNet (docs/results.md §2). So on CPU the barrier is a conditional on
  `zero == 0`, whose predicate is always true but unknown to the compiler (`zero`: an exact 0.0
  computed from the data); its other branch, never taken, gives zeros. Elsewhere it is
  `lax.optimization_barrier`. Only floating leaves pass through the barrier; the others
  (integers, `float0` cotangents) are returned as they are.
  """
  leaves, treedef = jax.tree.flatten(tree)
  floating = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.inexact)]

  def conditional(xs: list[jax.Array]) -> list[jax.Array]:
    return jax.lax.cond(zero == 0, lambda t: t, lambda t: [jnp.zeros_like(x) for x in t], xs)

  kept = jax.lax.platform_dependent(
      [leaves[i] for i in floating], cpu=conditional, default=jax.lax.optimization_barrier)
  for i, x in zip(floating, kept):
    leaves[i] = x
  return jax.tree.unflatten(treedef, leaves)


def remat_after_cotangent(f: Callable[..., Any]) -> Callable[..., Any]:
  """`f` whose reverse pass recomputes `f`'s forward pass instead of storing its residuals.

  Like `jax.checkpoint(f)` (reverse mode only), but the recomputation data-depends on the
  incoming cotangent, so XLA can neither hoist it into the forward pass nor merge it with the
  original computation. XLA:CPU removes `jax.checkpoint`'s optimization barriers early and then
  deduplicates the recomputation away, so `jax.checkpoint` saved no memory there (measured:
  1.9 GB at k = 30 either way; 107 MB with this, see docs/results.md). The reverse pass returns
  its cotangents through `fusion_barrier`, so that XLA cannot fuse the sums of the cotangents of
  a chain of such steps into one sum that keeps every step's terms live.
  """

  @jax.custom_vjp
  def g(*args):
    return f(*args)

  def fwd(*args):
    return f(*args), args

  def bwd(args, cotangent):
    zero = _zero_like_scalar_of(cotangent)
    args = jax.tree.map(
        lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a, args
    )
    return fusion_barrier(jax.vjp(f, *args)[1](cotangent), zero)

  g.defvjp(fwd, bwd)
  return g


def k_step_loss(
    c: PyTree,
    params: PyTree,
    state: PyTree,
    batches: Sequence[PyTree],
    *,
    loss_fn: StatefulLossFn,
    optimizer: optax.GradientTransformation = DEFAULT_INNER_OPTIMIZER,
    first_order: bool = False,
    remat: bool = False,
) -> jax.Array:
  """`L(θk(c); D_k)`: the loss after `k = len(batches) - 1` optax steps from `c ⊙ params`.

  Args:
    c: mask pytree (params' structure; leaves broadcast to the params).
    params: initial params `θinit`.
    state: model state threaded through the steps (`{}` if none).
    batches: `k + 1` batches: one per inner step, the last for the outer loss.
    loss_fn: `loss_fn(params, state, batch) -> (loss, new_state)`.
    optimizer: any optax transformation (SGD, momentum, Adam, ...).
    first_order: stop gradients through the inner updates (`∂θk/∂c = θinit`).
    remat: recompute each inner step in the backward pass (`remat_after_cotangent`), so it
      stores only each step's params, optimizer state and batch, not its activations: memory
      stays nearly flat in `k` for about 5% more time. Reverse mode only.

  The Python loop is unrolled at trace time (k is static): a rolled `lax.scan` around
  convolutions is about 10x slower on XLA:CPU.
  """
  step = functools.partial(_inner_step, loss_fn, optimizer, first_order)
  if remat:
    step = remat_after_cotangent(step)
  theta = objective.masked(params, c)
  opt_state = optimizer.init(theta)
  for batch in batches[:-1]:
    theta, opt_state, state = step(theta, opt_state, state, batch)
  return loss_fn(theta, state, batches[-1])[0]


meta_gradient = jax.jit(
    jax.grad(k_step_loss), static_argnames=("loss_fn", "optimizer", "first_order", "remat")
)
"""Jitted `∂ k_step_loss / ∂c` (signed, shaped like `c`); same arguments as `k_step_loss`.

Compiles once per static setup (`loss_fn`, `optimizer`, `first_order`, `remat`, number of
batches, shapes)."""


def step_batches(batches: PyTree | Sequence[PyTree], num_steps: int) -> list[PyTree]:
  """The `num_steps + 1` batches of the inner steps and the outer loss: the given ones, or a
  single given batch reused for every step."""
  if num_steps < 0:
    raise ValueError(f"num_steps={num_steps} must be >= 0.")
  batches = objective.as_batch_list(batches)
  if len(batches) == 1:
    return batches * (num_steps + 1)
  if len(batches) != num_steps + 1:
    raise ValueError(
        f"ProsPr with num_steps={num_steps} needs {num_steps + 1} batches (one per inner step "
        f"and one for the outer loss) or a single batch to reuse; got {len(batches)}."
    )
  return batches


def prospr_scores(
    loss_fn,
    params: PyTree,
    batches: PyTree | Sequence[PyTree],
    *,
    state: PyTree | None = None,
    num_steps: int = 3,
    optimizer: optax.GradientTransformation = DEFAULT_INNER_OPTIMIZER,
    first_order: bool = False,
    remat: bool = False,
) -> PyTree:
  """ProsPr saliency `|∂L(θk(c); Dk)/∂c|` at `c = 1`, a pytree like `params`.

  Args:
    loss_fn: `loss_fn(params, batch) -> loss`, or with `state`,
      `loss_fn(params, state, batch) -> (loss, new_state)`.
    params: initial params.
    batches: `num_steps + 1` batches (inner steps, then the outer loss), or a single batch
      that is reused for every step.
    state: model state such as `{'batch_stats': ...}`; never modified.
    num_steps: number of inner optimizer steps `k` (0 gives SNIP).
    optimizer: the inner optax optimizer (default SGD with learning rate 0.1).
    first_order: treat the inner updates as constants (first-order ProsPr).
    remat: checkpoint each inner step to bound memory as `k` grows.

  Returns:
    Non-negative scores with the structure and shapes of `params`. (Channel scores: see
    `prospr_jax.structured`.)
  """
  batches = step_batches(batches, num_steps)
  loss_fn, state = objective.with_state(loss_fn, state)
  grads = meta_gradient(
      masks_lib.ones_masks(params), params, state, batches, loss_fn=loss_fn, optimizer=optimizer,
      first_order=first_order, remat=remat,
  )
  return jax.tree.map(abs, grads)
