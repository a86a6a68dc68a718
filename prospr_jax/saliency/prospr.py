"""ProsPr (Alizadeh et al., ICLR 2022): saliency from a meta-gradient through k training steps.

With a multiplicative mask `c` on the params, `θ0 = c ⊙ θinit`; `k` optax updates on batches
`D0..D(k-1)` give `θk(c)`; the saliency is `|∂L(θk(c); Dk) / ∂c|` at `c = 1`. All params
(biases, BatchNorm affine) are updated by the inner optimizer; model state (BatchNorm
statistics) is threaded through the inner steps and discarded.

The inner steps run as a `lax.scan` over the stacked inner batches (`unroll=n` unrolls `n`
steps per scan iteration), or, with `unroll=True`, as a Python loop unrolled at trace time,
whose program and compile time grow linearly in `k`. `default_unroll` picks by platform from
measurements (experiments/time_to_mask_benchmark.py).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree, StatefulLossFn

DEFAULT_INNER_OPTIMIZER = optax.sgd(0.1)
"""The inner optimizer of the authors' code: plain SGD, learning rate 0.1.

`meta_gradient` compiles once per optimizer *object* (an optax transformation is a tuple of
closures, so two `optax.sgd(0.1)` are not equal): reuse one optimizer object across calls to
reuse the compiled program."""

Unroll = bool | int
"""How the inner steps are traced: True for a Python loop unrolled at trace time, an int
`n >= 1` for a `lax.scan` that unrolls `n` steps per iteration."""

CPU_UNROLLED_MAX_STEPS = 3
"""On CPU, `default_unroll` unrolls the inner loop fully up to this many inner steps and scans
above: the shorter cold time to a mask (compile + one run) on SmallConvNet at batch 128
(experiments/time_to_mask_benchmark.py, this project's 2-core VM with nothing else running,
docs/data/time_to_mask_cpu.txt): at k = 3 unrolled 4.5 + 0.4 s against the scan's 5.4 + 0.5 s,
at k = 10 unrolled 10.6 + 1.3 s against 5.2 + 1.7 s. The crossover depends on the model: on
ResNet-20 the scan is ahead already at k = 3 (12.3 + 4.7 s against 15.5 + 4.4 s)."""


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
  SGD on SmallConvNet (docs/benchmarks.md). So on CPU the barrier is a conditional on
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


def remat_after_cotangent(f: Callable[..., Any], constant_argnums: tuple[int, ...] = ()
                          ) -> Callable[..., Any]:
  """`f` whose reverse pass recomputes `f`'s forward pass instead of storing its residuals.

  Like `jax.checkpoint(f)` (reverse mode only), but the recomputation data-depends on the
  incoming cotangent, so XLA can neither hoist it into the forward pass nor merge it with the
  original computation. XLA:CPU removes `jax.checkpoint`'s optimization barriers early and then
  deduplicates the recomputation away, so `jax.checkpoint` saved no memory there (measured:
  1.9 GB at k = 30 either way; 107 MB with this, see docs/benchmarks.md). The reverse pass returns
  its cotangents through `fusion_barrier`, so that XLA cannot fuse the sums of the cotangents of
  a chain of such steps into one sum that keeps every step's terms live.

  The arguments at `constant_argnums` (data, indices) get a zero cotangent without computing
  one, and the recomputation reads them as they are.
  """

  @jax.custom_vjp
  def g(*args):
    return f(*args)

  def fwd(*args):
    return f(*args), args

  def bwd(args, cotangent):
    zero = _zero_like_scalar_of(cotangent)
    varying = [i for i in range(len(args)) if i not in constant_argnums]

    def f_of_varying(*values):
      full = list(args)
      for i, value in zip(varying, values):
        full[i] = value
      return f(*full)

    values = [jax.tree.map(
        lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a,
        args[i]) for i in varying]
    cotangents = fusion_barrier(jax.vjp(f_of_varying, *values)[1](cotangent), zero)
    out: list[Any] = [None] * len(args)
    for i, value in zip(varying, cotangents):
      out[i] = value
    return tuple(out)

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
    unroll: Unroll | None = None,
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
      stays nearly flat in `k` for about 5% more time. In a scan, the steps are also grouped
      into about sqrt(k) blocks whose carries are recomputed, so only about 2 sqrt(k) carries
      are stored (`_scanned_steps`), for one more forward pass per step. Reverse mode only.
    unroll: True: the inner steps as a Python loop unrolled at trace time (program size and
      compile time linear in `k`); an int `n >= 1`: a `lax.scan` over the stacked inner
      batches unrolling `n` steps per iteration; None: `default_unroll(k)`. The value is the
      same up to float rounding.
  """
  num_steps = len(batches) - 1
  unroll = check_unroll(default_unroll(num_steps) if unroll is None else unroll)
  step = functools.partial(_inner_step, loss_fn, optimizer, first_order)
  theta = objective.masked(params, c)
  carry = (theta, optimizer.init(theta), state)
  if unroll is True:
    step = remat_after_cotangent(step) if remat else step
    for batch in batches[:-1]:
      carry = step(*carry, batch)
  elif num_steps > 0:
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches[:-1])
    carry = _scanned_steps(step, carry, stacked, num_steps, unroll, remat)
  theta, _, state = carry
  return loss_fn(theta, state, batches[-1])[0]


Carry = tuple[PyTree, PyTree, PyTree]
"""The inner loop's carry: (params, optimizer state, model state)."""


def _scanned_steps(step: Callable[..., Carry], carry: Carry, stacked: PyTree, num_steps: int,
                   unroll: int, remat: bool) -> Carry:
  """`step` applied to `carry` for each of the `num_steps` batches stacked along axis 0 of
  `stacked`, as a `lax.scan` over step indices (unrolling `unroll` steps per iteration).

  The scan runs over indices and each step takes its batch from `stacked` itself, so the
  reverse pass never stores a copy of a step's batch. With `remat` the steps run in about
  sqrt(`num_steps`) blocks of about sqrt(`num_steps`) steps: the reverse pass stores the carry
  at each block's start and, per block, recomputes that block's carries, so memory grows with
  sqrt(k), not k, for one more forward pass of every inner step.
  """

  def indexed_step(params: PyTree, opt_state: PyTree, state: PyTree, stacked: PyTree,
                   i: jax.Array) -> Carry:
    return step(params, opt_state, state, jax.tree.map(lambda x: x[i], stacked))

  # The batches and indices get no cotangent: the reverse pass reads them, never sums into them.
  step_at = remat_after_cotangent(indexed_step, constant_argnums=(3, 4)) if remat else indexed_step

  def steps_at(carry: Carry, stacked: PyTree, indices: jax.Array) -> Carry:
    return jax.lax.scan(lambda carry, i: (step_at(*carry, stacked, i), None), carry, indices,
                        unroll=unroll)[0]

  indices = jnp.arange(num_steps)
  if not remat:
    return steps_at(carry, stacked, indices)
  block = math.isqrt(num_steps)  # >= 1: the caller scans only for num_steps > 0
  num_blocks = num_steps // block
  blocks = indices[:num_blocks * block].reshape(num_blocks, block)
  remat_block = remat_after_cotangent(steps_at, constant_argnums=(1, 2))
  carry = jax.lax.scan(lambda carry, b: (remat_block(carry, stacked, b), None), carry,
                       blocks)[0]
  return steps_at(carry, stacked, indices[num_blocks * block:])


meta_gradient = jax.jit(
    jax.grad(k_step_loss),
    static_argnames=("loss_fn", "optimizer", "first_order", "remat", "unroll"),
)
"""Jitted `∂ k_step_loss / ∂c` (signed, shaped like `c`); same arguments as `k_step_loss`.

Compiles once per static setup (`loss_fn`, `optimizer`, `first_order`, `remat`, `unroll`,
number of batches, shapes). Static arguments are compared by equality: an equal `loss_fn`
(e.g. a new `LinenLoss` of an equal model) reuses the program, a new optimizer object does
not (see `DEFAULT_INNER_OPTIMIZER`)."""


def default_unroll(num_steps: int) -> Unroll:
  """The inner loop's form for `num_steps` inner steps on `jax.default_backend()`: on CPU,
  fully unrolled (True) up to `CPU_UNROLLED_MAX_STEPS` steps and a scan (1) above; on GPU and
  TPU always a scan (1), whose compile time does not grow with `num_steps`."""
  if jax.default_backend() == "cpu" and num_steps <= CPU_UNROLLED_MAX_STEPS:
    return True
  return 1


def check_unroll(unroll: Unroll) -> Unroll:
  """`unroll` if it is True or an int >= 1; TypeError or ValueError otherwise."""
  if unroll is True:
    return unroll
  if isinstance(unroll, bool) or not isinstance(unroll, numbers.Integral):
    raise TypeError(f"unroll must be True (a Python loop) or an int >= 1 (steps per scan "
                    f"iteration), not {unroll!r}.")
  if unroll < 1:
    raise ValueError(f"unroll={unroll} must be >= 1 (or True for a Python loop).")
  return int(unroll)


def check_num_steps(num_steps: int) -> int:
  """`num_steps` if it is an int >= 0 (not a bool); TypeError or ValueError otherwise."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
    raise TypeError(f"num_steps must be an int >= 0, not {num_steps!r}.")
  if num_steps < 0:
    raise ValueError(f"num_steps={num_steps} must be >= 0.")
  return int(num_steps)


def step_batches(batches: PyTree | Sequence[PyTree], num_steps: int) -> list[PyTree]:
  """The `num_steps + 1` batches of the inner steps and the outer loss: the given ones, or a
  single given batch reused for every step."""
  num_steps = check_num_steps(num_steps)
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
    unroll: Unroll | None = None,
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
    unroll: the inner loop's form (see `k_step_loss`); None: `default_unroll(num_steps)`.

  Returns:
    Non-negative scores with the structure and shapes of `params`. (Channel scores: see
    `prospr_jax.structured`.)
  """
  batches = step_batches(batches, num_steps)
  unroll = check_unroll(default_unroll(num_steps) if unroll is None else unroll)
  loss_fn, state = objective.with_state(loss_fn, state)
  grads = meta_gradient(
      masks_lib.ones_masks(params), params, state, batches, loss_fn=loss_fn, optimizer=optimizer,
      first_order=first_order, remat=remat, unroll=unroll,
  )
  return jax.tree.map(abs, grads)
