"""Replacing the ReLUs of any JAX function by another rule, by interpreting its traced program.

`rewrite_relus(fn, on_relu)` traces `fn` to a jaxpr and evaluates it equation by equation; every
ReLU, i.e. a `max(x, 0)` with a constant zero operand (which is what `jax.nn.relu`,
`flax.linen.relu` and `jnp.maximum(x, 0)` trace to), is replaced by `on_relu(x)`, called in
program order. The model needs no cooperation: PX uses this to record activation patterns, to
gate a copy of the network by them, and to turn the ReLUs off.

Calls (`jit`, `custom_jvp_call`, `custom_vjp_call`, `closed_call`, `remat`) that contain a
ReLU are evaluated through their inner program (their custom derivative rules are dropped:
the rewritten program is differentiated as written, and `remat` no longer rematerializes);
a ReLU inside any other sub-program, e.g. a loop or a conditional (`scan`, `while`, `cond`),
is rejected, since one rule call per traced ReLU would not match one activation per executed
ReLU there. Other equations are bound as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jcore
import numpy as np

ReluRule = Callable[[jax.Array], jax.Array]
"""`on_relu(x) -> y`: what replaces `max(x, 0)`; called once per ReLU, in program order."""

_CALL_JAXPR_PARAMS = {  # call-like primitive -> the param holding its inner program
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}
_ZERO_PRESERVING = {"broadcast_in_dim", "convert_element_type", "reshape", "squeeze",
                    "expand_dims"}


class NoReluError(ValueError):
  """The traced function has no ReLU (`max(x, 0)`) to replace."""


def call_body(eqn: jcore.JaxprEqn) -> tuple[jcore.Jaxpr, Sequence[Any]] | None:
  """`(jaxpr, consts)` of a call-like equation, or None for any other equation."""
  key = _CALL_JAXPR_PARAMS.get(eqn.primitive.name)
  if key is None or key not in eqn.params:
    return None
  inner = eqn.params[key]
  if isinstance(inner, jcore.ClosedJaxpr):
    return inner.jaxpr, inner.consts
  return inner, ()


def _is_zero_literal(atom: Any) -> bool:
  return isinstance(atom, jcore.Literal) and np.all(np.asarray(atom.val) == 0)


def _relu_operand(eqn: jcore.JaxprEqn, zeros: set, batch_size: int | None) -> int | None:
  """Index of the non-constant operand `x` of a `max(x, 0)` equation (with `x` of shape
  `[batch_size, ...]`, ndim >= 2, if `batch_size` is given), else None."""
  if eqn.primitive.name != "max":
    return None
  is_zero = [_is_zero_literal(a) or (isinstance(a, jcore.Var) and a in zeros)
             for a in eqn.invars]
  if is_zero not in ([False, True], [True, False]):
    return None
  index = is_zero.index(False)
  shape = eqn.invars[index].aval.shape
  if batch_size is not None and (len(shape) < 2 or shape[0] != batch_size):
    return None
  return index


def _track_zeros(eqn: jcore.JaxprEqn, zeros: set) -> None:
  """Adds the outputs of `eqn` to `zeros` if it only reshapes or casts a constant zero."""
  if eqn.primitive.name in _ZERO_PRESERVING and (
      _is_zero_literal(eqn.invars[0]) or eqn.invars[0] in zeros):
    zeros.update(eqn.outvars)


def count_relus(jaxpr: jcore.Jaxpr, batch_size: int | None = None) -> int:
  """Number of ReLUs in `jaxpr` (with `batch_size`: only those on `[batch_size, ...]` arrays),
  counting those inside call-like equations.

  Raises:
    NotImplementedError: a ReLU sits inside a loop or conditional (module docstring).
  """
  zeros: set = set()
  count = 0
  for eqn in jaxpr.eqns:
    _track_zeros(eqn, zeros)
    if _relu_operand(eqn, zeros, batch_size) is not None:
      count += 1
      continue
    inner = call_body(eqn)
    if inner is not None:
      count += count_relus(inner[0], batch_size)
      continue
    for sub in jcore.jaxprs_in_params(eqn.params):
      if count_relus(sub, batch_size):
        raise NotImplementedError(
            f"A ReLU sits inside a '{eqn.primitive.name}' (a loop, conditional or other "
            "sub-program): rewriting ReLUs needs one activation per traced ReLU. Unroll loops "
            "(e.g. a Python for loop instead of nn.scan) to use this method."
        )
  return count


def _evaluate(jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any],
              on_relu: ReluRule, batch_size: int | None) -> list[Any]:
  """Evaluates `jaxpr` on `args`, replacing each ReLU by `on_relu`."""
  env: dict[jcore.Var, Any] = {}
  zeros: set = set()

  def read(atom):
    return atom.val if isinstance(atom, jcore.Literal) else env[atom]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    invals = [read(a) for a in eqn.invars]
    relu_input = _relu_operand(eqn, zeros, batch_size)
    inner = call_body(eqn)
    if relu_input is not None:
      outvals = [on_relu(invals[relu_input])]
    elif inner is not None and count_relus(inner[0], batch_size):
      outvals = _evaluate(inner[0], inner[1], invals, on_relu, batch_size)
    else:
      with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outvals = out if eqn.primitive.multiple_results else [out]
    _track_zeros(eqn, zeros)
    for var, value in zip(eqn.outvars, outvals):
      if not isinstance(var, jcore.DropVar):
        env[var] = value
  return [read(v) for v in jaxpr.outvars]


def rewrite_relus(fn: Callable[..., Any], on_relu: ReluRule, *,
                  batch_size: int | None = None) -> Callable[..., Any]:
  """`fn` with every ReLU `max(x, 0)` replaced by `on_relu(x)` (module docstring).

  Args:
    fn: any traceable function of array pytrees, e.g. `apply_fn(params, x)`.
    on_relu: the replacement, called once per ReLU in program order while the returned
      function is traced or run.
    batch_size: if given, only `max(x, 0)` with `x` of shape `[batch_size, ...]` (ndim >= 2)
      is a ReLU: activations keep the batch axis, while clamps of batch statistics (Flax's
      BatchNorm computes its train-mode variance as `max(E[x²] - E[x]², 0)`) do not.

  Returns:
    A function with `fn`'s signature and output structure.

  Raises (when the returned function is called):
    NoReluError: `fn` has no ReLU.
    NotImplementedError: a ReLU sits inside a loop or conditional.
  """

  def rewritten(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    if not count_relus(closed.jaxpr, batch_size):
      raise NoReluError(
          f"{getattr(fn, '__name__', type(fn).__name__)} has no ReLU to replace: no "
          "max(x, 0) (jax.nn.relu, flax.linen.relu, jnp.maximum(x, 0)) in its traced program. "
          "Path-based criteria such as PX need a ReLU network, whose units switch paths on "
          "and off; other activations (tanh, GELU, leaky ReLU, ...) are not linearized."
      )
    flat = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args), on_relu, batch_size)
    return jax.tree.unflatten(jax.tree.structure(out_shape), flat)

  return rewritten
