"""The one table of primitive rules that channel tracing and compaction both read.

It starts with the built-in rules (`rules_elementwise`, `rules_contraction`, `rules_shape`,
`rules_slicing`, `rules_reduction`); `register_primitive_rule` teaches it new primitives.
`trace_channels` takes a snapshot (`current_rules`) and keeps it in its `ChannelTrace`, so a
compacted program rewrites every equation with the rule it was traced with.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import jax.extend as jex

from prospr_jax.structured import (
    rules_contraction, rules_elementwise, rules_reduction, rules_shape, rules_slicing)
from prospr_jax.structured.nested import NESTED
from prospr_jax.structured.primitive_rule import PrimitiveRule

_registry: dict[str, PrimitiveRule] = {
    **rules_elementwise.RULES, **rules_contraction.RULES, **rules_shape.RULES,
    **rules_slicing.RULES, **rules_reduction.RULES,
}


def current_rules() -> Mapping[str, PrimitiveRule]:
  """A read-only snapshot of the registry: `{primitive name: rule}`."""
  return types.MappingProxyType(dict(_registry))


def rule_for(name: str) -> PrimitiveRule | None:
  """The registered rule of the primitive called `name`, or `None`."""
  return _registry.get(name)


def supported_primitives() -> frozenset[str]:
  """The primitives channel tracing follows now: those with a rule, and the call-like ones
  (`jit`, `custom_jvp_call`, `remat`, ...) whose bodies it enters."""
  return frozenset(_registry) | frozenset(NESTED)


class RuleRegistration:
  """A registration made by `register_primitive_rule`; `undo()` (or leaving a `with` block)
  restores the primitive's previous rule, or its absence.

  Attributes:
    name: the primitive's name.
    rule: the registered rule.
    previous: the rule it replaced, or `None`.
  """

  def __init__(self, name: str, rule: PrimitiveRule, previous: PrimitiveRule | None) -> None:
    self.name, self.rule, self.previous = name, rule, previous

  def undo(self) -> None:
    """Restores the previous rule.

    Raises:
      RuntimeError: if the primitive's rule is no longer this one (undone already, or
        registered again since: undo that later registration first).
    """
    if _registry.get(self.name) is not self.rule:
      raise RuntimeError(
          f"Cannot undo the registration of '{self.name}': its rule is no longer the one "
          "registered (undone already, or registered again since; undo that first).")
    if self.previous is None:
      del _registry[self.name]
    else:
      _registry[self.name] = self.previous

  def __enter__(self) -> RuleRegistration:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.undo()


def register_primitive_rule(primitive: jex.core.Primitive | str, rule: PrimitiveRule, *,
                            override: bool = False) -> RuleRegistration:
  """Teaches channel tracing and compaction a primitive (e.g. a custom op or a `lax` op the
  tracer lacks), from now on, or within a `with` block.

  The rule (`PrimitiveRule`) pairs two functions:

  * `propagate(tracer, eqn, ins) -> outs` says how channels flow through one equation.
    `eqn` is the `jax.extend.core.JaxprEqn` (its `primitive`, `params`, `invars` avals); `ins`
    holds a `TracedValue` per input: its `shape`, per axis its `labels` (an int array giving
    the channel *atom* of each position, or `None`: no channels along that axis), and whether
    it is `zero` at removed channels. It returns a `TracedValue` per output. An output axis
    whose position `i` holds what input position `j` held reuses that input's atom at `i`;
    positions that belong to no input channel get `tracer.fresh(n)` atoms (or `None`).
    Through `tracer` it records constraints: `tracer.join_axis([a, b])` makes positions
    removed together, `tracer.pin(labels)` keeps the channels of an axis the equation mixes
    (pinning is always safe, it only prunes less), `tracer.mark(sources, MEMBER or
    CONSUMER)` gives a param axis its role. Set `zero=True` on an output only where it is
    exactly 0 at removed channels whenever the inputs are (`False` is always safe).
    `elementwise_propagate(output_zero)` is the propagation of any elementwise op.
  * `rewrite(eqn, ins, kept_in, kept_out) -> outs` computes the equation in the compacted
    program: `ins` are the compacted input arrays, `kept_in` / `kept_out` give per input /
    output and axis the remaining original positions (sorted ints, `None`: all remain); it
    returns arrays of the compacted output shapes (checked). The default, `rebind`, binds
    the primitive unchanged: right when its parameters hold no shapes or per-channel values;
    `rewrite_params(param=fn)` recomputes the parameters that do. The compacted program is
    vmapped and jitted, so the primitive needs batching and lowering rules.

  Optionally `macs(eqn) -> int` counts its multiply-accumulates for `count_macs`.

  Example, an elementwise activation primitive that maps 0 to 0 (`all`: the output is 0
  where every operand is)::

      rule = structured.PrimitiveRule(propagate=structured.elementwise_propagate(all))
      with structured.register_primitive_rule(my_activation_p, rule):
        masks = structured.structured_prune("snip", model, variables, batches, 0.5)
        small = structured.compact(model, variables, masks, x)

  Args:
    primitive: the primitive, or its name (`eqn.primitive.name`).
    rule: its rule.
    override: allow replacing an existing rule (built-in or registered).

  Returns:
    The registration: it takes effect at once and lasts until `undo()` is called, or until
    its `with` block ends.

  Raises:
    TypeError: if `primitive` is neither a primitive nor a name, or `rule` no `PrimitiveRule`.
    ValueError: if the primitive already has a rule and `override` is false, or it is a
      call-like primitive whose body tracing enters (`jit`, `custom_jvp_call`, ...).
  """
  name = primitive.name if isinstance(primitive, jex.core.Primitive) else primitive
  if not isinstance(name, str) or not name:
    raise TypeError(f"Expected a jax primitive or its name, got {primitive!r}.")
  if not isinstance(rule, PrimitiveRule):
    raise TypeError(f"Expected a PrimitiveRule for '{name}', got {type(rule).__name__}.")
  if name in NESTED:
    raise ValueError(f"'{name}' is a call-like primitive: tracing follows its body, it takes "
                     "no rule.")
  previous = _registry.get(name)
  if previous is not None and not override:
    raise ValueError(f"Primitive '{name}' already has a channel rule; pass override=True to "
                     "replace it.")
  _registry[name] = rule
  return RuleRegistration(name, rule, previous)
