"""The channel tracer: walks a jaxpr, giving every value a `TracedValue`, with primitive rules.

`ChannelTracer.run` enters nested call bodies (`nested`) and applies, to every other equation,
the `propagate` of its primitive's rule (`primitive_rule.PrimitiveRule`). Rules call the
tracer's public methods to record what the equation implies: `join_axis` / `pin` atoms,
`mark` roles of leaf axes, `fresh` atoms for new positions, `unsupported` errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from prospr_jax.structured.atoms import ChannelAtoms
from prospr_jax.structured.nested import nested_jaxpr
from prospr_jax.structured.trace_errors import (
    UnsupportedPrimitiveError, unsupported_primitive_error)
from prospr_jax.structured.trace_types import (
    CONSUMER, MEMBER, Labels, Leaf, LeafAxis, LeafKind, Role, Site, TracedValue)


class PropagationRule(Protocol):
  """What the tracer reads of a primitive's rule (`primitive_rule.PrimitiveRule`, which
  imports this module, since rules receive the tracer)."""

  def propagate(self, tracer: ChannelTracer, eqn: jex.core.JaxprEqn,
                ins: list[TracedValue]) -> list[TracedValue]:
    """The channel flow through `eqn`: a `TracedValue` per output."""


class ChannelTracer:
  """Walks a jaxpr, computing a `TracedValue` per variable and recording joins, pins and roles.

  Args:
    rules: `{primitive name: PrimitiveRule}`, the rules to follow (`rule_registry`).
  """

  def __init__(self, rules: Mapping[str, PropagationRule]) -> None:
    self.rules = rules
    self.atoms = ChannelAtoms()
    self.leaves: list[Leaf] = []
    self.labels: dict[tuple[Site, Any], Labels] = {}
    self.consts: dict[tuple[Site, Any], int] = {}
    self.roles: dict[LeafAxis, Role] = {}
    self.step = 0  # index of the current equation in trace order
    self.eqns: list[jex.core.JaxprEqn] = []  # the current equation, then its enclosing calls

  # Leaves and fresh values.
  def leaf_value(self, path: str, kind: LeafKind, shape: tuple[int, ...]) -> TracedValue:
    """A new leaf (param, state or constant) with new atoms on every axis, and its value."""
    atoms = tuple(self.atoms.new(n) for n in shape)
    index = len(self.leaves)
    self.leaves.append(Leaf(path, kind, tuple(shape), atoms))
    return TracedValue(tuple(shape), atoms,
                       tuple(frozenset({(index, a)}) for a in range(len(shape))),
                       zero=kind == "param")

  def input_value(self, shape: tuple[int, ...]) -> TracedValue:
    """A leaf of the model's input: pinned atoms on every axis."""
    return TracedValue(tuple(shape), tuple(self.atoms.new(n, pinned=True) for n in shape),
                       None, zero=True)

  def fresh(self, n: int) -> np.ndarray:
    """`n` new atoms, for positions no leaf owns (e.g. padding)."""
    return self.atoms.new(n)

  # Joins, pins, roles.
  def join_axis(self, parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Joins position by position; a labelled axis meeting a `None` axis is pinned instead.

    Returns the joined labels (`parts[0]`), or `None` if some part is `None` (or none given).
    """
    if not parts:
      return None
    if any(p is None for p in parts):
      for p in parts:
        self.atoms.pin(p)
      return None
    for p in parts[1:]:
      self.atoms.join(parts[0], p)
    return parts[0]

  def pin(self, labels: np.ndarray | None) -> None:
    """Marks these atoms' channels as never pruned (e.g. an axis the equation mixes)."""
    self.atoms.pin(labels)

  def mark(self, sources: frozenset[LeafAxis], kind: str,
           producer_depth: int | None = None) -> None:
    """Gives each leaf axis in `sources` the role `kind` (`MEMBER` or `CONSUMER`; first use
    wins, member beats consumer), and `producer_depth` if the axis is a layer's output."""
    for leaf_axis in sources:
      role = self.roles.get(leaf_axis)
      if role is None:
        role = self.roles[leaf_axis] = Role(kind, self.step)
      elif kind == MEMBER and role.kind == CONSUMER:
        role.kind = MEMBER
      if producer_depth is not None and role.producer is None:
        role.producer = (producer_depth, self.step)

  def zero_at_removed(self, v: TracedValue, out_shape: tuple[int, ...],
                      out_labels: Labels) -> bool:
    """Whether operand `v` is 0 at the removed positions of an elementwise op's output.

    A broadcast operand holds one value along a broadcast axis, so it is 0 there only if it is
    identically 0, unless that axis of the output can never lose positions (no labels, or
    only pinned atoms: the batch axis).
    """
    if v.const_zero:
      return True
    if len(v.shape) != len(out_shape):  # a scalar
      return False
    for a, (n, m) in enumerate(zip(v.shape, out_shape)):
      if n != m and not self.atoms.all_pinned(out_labels[a]):
        return False
    return v.zero

  def unsupported(self, why: str) -> UnsupportedPrimitiveError:
    """The error to raise at the current equation, saying `why` it cannot be followed."""
    return unsupported_primitive_error(self.eqns[::-1], why, self.rules)

  # Walking.
  def run(self, jaxpr: jex.core.Jaxpr, consts: Sequence[Any], args: Sequence[TracedValue],
          site: Site) -> list[TracedValue]:
    """Walks `jaxpr` (at `site`) on these argument values; returns its output values."""
    env: dict[Any, TracedValue] = {}
    for i, (var, const) in enumerate(zip(jaxpr.constvars, consts)):
      value = self.leaf_value(f"const@{'.'.join(map(str, site))}#{i}", "const", np.shape(const))
      self.consts[(site, var)] = len(self.leaves) - 1
      numeric = jnp.issubdtype(jnp.result_type(const), jnp.number)
      env[var] = dataclasses.replace(value, const_zero=bool(numeric and not np.any(const)))
    env.update(zip(jaxpr.invars, args))
    for i, eqn in enumerate(jaxpr.eqns):
      ins = [self._read(env, v) for v in eqn.invars]
      self.step += 1
      self.eqns.append(eqn)
      outs = self._equation(eqn, ins, site + (i,))
      self.eqns.pop()
      for var, value in zip(eqn.outvars, outs, strict=True):
        if not isinstance(var, jex.core.DropVar):
          env[var] = value
    for var, value in env.items():
      self.labels[(site, var)] = value.labels
    return [self._read(env, v) for v in jaxpr.outvars]

  @staticmethod
  def _read(env: dict[Any, TracedValue], var: Any) -> TracedValue:
    if isinstance(var, jex.core.Literal):
      zero = not np.any(var.val)
      return TracedValue(np.shape(var.val), tuple(None for _ in np.shape(var.val)), (),
                         zero=zero, const_zero=zero)
    return env[var]

  def _equation(self, eqn: jex.core.JaxprEqn, ins: list[TracedValue],
                site: Site) -> list[TracedValue]:
    body = nested_jaxpr(eqn)
    if body is not None:
      return self.run(*body, ins, site)
    rule = self.rules.get(eqn.primitive.name)
    if rule is None:
      raise self.unsupported("no channel rule for it")
    return rule.propagate(self, eqn, ins)
