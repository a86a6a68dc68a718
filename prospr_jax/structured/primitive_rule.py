"""One primitive's rule: how channels flow through it (tracing) and how it shrinks (compaction).

A `PrimitiveRule` pairs

* `propagate(tracer, eqn, ins) -> outs`: given the equation and a `TracedValue` per input,
  records on the `tracer.ChannelTracer` which atoms the equation joins or pins and which leaf
  axes it gives a role, and returns a `TracedValue` per output;
* `rewrite(eqn, ins, kept_in, kept_out) -> outs`: one equation of the compacted program, run
  on the compacted `ins` (arrays), given the positions that remain (`Kept`) of every input and
  output axis; it must return arrays of the compacted output shapes;
* `macs(eqn) -> int`: the multiply-accumulates the equation costs (`cost.count_macs`).

This module also holds the helpers rules share: `rebind` / `rewrite_params` (rewrites), the
shapes of an equation's outputs, and the depth / dependence of several operands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax.extend as jex
import numpy as np

from prospr_jax.structured.trace_types import TracedValue
from prospr_jax.structured.tracer import ChannelTracer

Kept = tuple[np.ndarray | None, ...]
"""Per axis: the remaining positions (sorted original indices), or `None` if all remain."""

Propagate = Callable[[ChannelTracer, jex.core.JaxprEqn, list[TracedValue]], list[TracedValue]]
"""`propagate(tracer, eqn, ins) -> outs`: the channel flow through one equation."""
Rewrite = Callable[[jex.core.JaxprEqn, list[Any], list[Kept], list[Kept]], list[Any]]
"""`rewrite(eqn, ins, kept of each input, kept of each output) -> outputs`: one equation of
the compacted program."""
ParamRule = Callable[[jex.core.JaxprEqn, list[Any], list[Kept], list[Kept]], Any]
"""The arguments of a `Rewrite`, returning one new parameter value of the equation."""
MacCount = Callable[[jex.core.JaxprEqn], int]
"""`macs(eqn)`: multiply-accumulates of one equation, from its shapes."""


def rewrite_params(**param_rules: ParamRule) -> Rewrite:
  """A rewrite binding the equation's primitive to the compacted inputs with the parameters
  named in `param_rules` replaced by what those compute (the others unchanged)."""

  def bind(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
           kept_out: list[Kept]) -> list[Any]:
    params = {**eqn.params,
              **{name: rule(eqn, ins, kept_in, kept_out) for name, rule in param_rules.items()}}
    out = eqn.primitive.bind(*ins, **params)
    return out if eqn.primitive.multiple_results else [out]

  return bind


rebind = rewrite_params()
"""The rewrite of a primitive whose parameters do not depend on the shapes (elementwise ops,
reductions, ...): the same primitive, bound to the compacted inputs."""


def _no_macs(eqn: jex.core.JaxprEqn) -> int:
  return 0


@dataclasses.dataclass(frozen=True)
class PrimitiveRule:
  """Channel propagation and compaction of one primitive (module docstring).

  Attributes:
    propagate: the channel flow through an equation (`Propagate`).
    rewrite: the equation in the compacted program (`Rewrite`); by default `rebind`, right for
      primitives whose parameters hold no shapes or per-channel values.
    macs: its multiply-accumulates (`MacCount`); by default 0 (only contractions count).
  """

  propagate: Propagate
  rewrite: Rewrite = rebind
  macs: MacCount = _no_macs


def out_shapes(eqn: jex.core.JaxprEqn) -> list[tuple[int, ...]]:
  """The shapes of `eqn`'s outputs in the traced program."""
  return [tuple(v.aval.shape) for v in eqn.outvars]


def compacted_out_shapes(eqn: jex.core.JaxprEqn, kept_out: list[Kept]) -> list[tuple[int, ...]]:
  """The shapes of `eqn`'s outputs in the compacted program: every axis shrunk to its kept
  positions."""
  return [tuple(n if k is None else len(k) for n, k in zip(shape, kept))
          for shape, kept in zip(out_shapes(eqn), kept_out)]


def max_depth(ins: Sequence[TracedValue]) -> int:
  """The largest layer depth of the operands (0 for none)."""
  return max((v.depth for v in ins), default=0)


def any_dependent(ins: Sequence[TracedValue]) -> bool:
  """Whether some operand depends on the model's input."""
  return any(v.dependent for v in ins)
