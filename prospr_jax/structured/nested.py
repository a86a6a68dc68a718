"""Call-like primitives (`jit`, `custom_jvp_call`, `remat`, ...): tracing and compaction enter
their bodies instead of applying a primitive rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.extend as jex

NESTED: dict[str, str] = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr",
}
"""Call-like primitives: their outputs are those of the nested jaxpr in this parameter."""


def nested_jaxpr(eqn: jex.core.JaxprEqn) -> tuple[jex.core.Jaxpr, Sequence[Any]] | None:
  """`(jaxpr, consts)` of the body of a call-like equation, or `None` for other primitives."""
  param = NESTED.get(eqn.primitive.name)
  if param is None:
    return None
  inner = eqn.params[param]
  return (inner.jaxpr, inner.consts) if hasattr(inner, "consts") else (inner, ())
