"""Rules of elementwise primitives: operands' labels join position by position.

A size-1 axis (or a scalar) broadcasts and joins nothing; joining a labelled axis with a `None`
axis pins the labelled atoms. A param axis combined with the activations becomes a `MEMBER`
(a bias, a BatchNorm scale). Whether the output is 0 at a removed channel follows from the
operands' (`mul`: any of them; `add`: all of them; `exp`: never, it maps 0 to 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.extend as jex

from prospr_jax.structured.primitive_rule import (
    PrimitiveRule, Propagate, any_dependent, max_depth, out_shapes)
from prospr_jax.structured.trace_types import MEMBER, TracedValue
from prospr_jax.structured.tracer import ChannelTracer

OutputZero = Callable[[Sequence[bool]], bool]
"""`output_zero(zeros)`: whether an elementwise op's output is 0 where its operand `i` is 0
exactly if `zeros[i]`."""


def elementwise_propagate(output_zero: OutputZero) -> Propagate:
  """The propagation of an elementwise primitive (module docstring), e.g. an activation.

  Args:
    output_zero: whether the output is 0 where the operands are 0 as given (`OutputZero`);
      `all` for an op that maps zeros to 0 (`relu`, `tanh`, `add`), `any` for a product,
      `lambda zeros: False` for an op that does not (`exp`, `cos`).
  """

  def propagate(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                ins: list[TracedValue]) -> list[TracedValue]:
    (shape,) = out_shapes(eqn)
    dependent = any_dependent(ins)
    labels, sources = [], []
    for a, n in enumerate(shape):
      parts = [v for v in ins if len(v.shape) == len(shape) and v.shape[a] == n]
      labels.append(t.join_axis([v.labels[a] for v in parts]))
      if dependent:
        for v in parts:
          if not v.dependent:
            t.mark(v.sources[a], MEMBER)
      sources.append(frozenset().union(*(v.sources[a] for v in parts)) if not dependent else None)
    labels = tuple(labels)
    zero = output_zero([t.zero_at_removed(v, shape, labels) for v in ins])
    const_zero = output_zero([v.const_zero for v in ins])
    return [TracedValue(shape, labels, None if dependent else tuple(sources), zero, const_zero,
                        max_depth(ins))]

  return propagate


def _never(zeros: Sequence[bool]) -> bool:
  return False


def _first(zeros: Sequence[bool]) -> bool:
  return zeros[0]


def _selected(zeros: Sequence[bool]) -> bool:
  """`select_n(which, *cases)`: 0 if every case is (whichever is selected)."""
  return all(zeros[1:])


def _integer_pow(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                 ins: list[TracedValue]) -> list[TracedValue]:
  """`x ** y` maps 0 to 0 for `y > 0` only."""
  return elementwise_propagate(all if eqn.params["y"] > 0 else _never)(t, eqn, ins)


_ZERO_PRESERVING_UNARY = (
    "neg", "abs", "sign", "floor", "ceil", "round", "sqrt", "cbrt", "tanh", "sin", "tan",
    "asin", "atan", "sinh", "asinh", "atanh", "erf", "erf_inv", "expm1", "log1p", "square",
    "real", "imag", "conj", "convert_element_type", "copy", "copy_p", "reduce_precision",
    "stop_gradient", "sharding_constraint",
)
_OTHER_UNARY = (
    "exp", "exp2", "log", "logistic", "cos", "cosh", "acos", "acosh", "rsqrt", "erfc",
    "is_finite", "not", "lgamma", "digamma", "population_count", "clz",
)
_OUTPUT_ZERO: dict[str, OutputZero] = {
    **{name: all for name in _ZERO_PRESERVING_UNARY + ("add", "add_any", "sub", "max", "min")},
    **{name: _never for name in _OTHER_UNARY + (
        "pow", "atan2", "nextafter", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
        "xor", "shift_left", "shift_right_logical", "shift_right_arithmetic")},
    "mul": any,
    "div": _first,
    "rem": _first,
    "select_n": _selected,
}

RULES: dict[str, PrimitiveRule] = {
    **{name: PrimitiveRule(elementwise_propagate(zero)) for name, zero in _OUTPUT_ZERO.items()},
    "integer_pow": PrimitiveRule(_integer_pow),
}
"""The built-in elementwise rules, by primitive name."""
