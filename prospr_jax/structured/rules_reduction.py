"""Rules of reductions, pooling windows and cumulative ops: they mix the positions of the axes
they run over, so those axes are pinned (their channels are never pruned); the other axes keep
their labels."""

from __future__ import annotations

import dataclasses

import jax.extend as jex

from prospr_jax.structured.primitive_rule import PrimitiveRule, out_shapes
from prospr_jax.structured.trace_types import TracedValue
from prospr_jax.structured.tracer import ChannelTracer


def _reduce(t: ChannelTracer, eqn: jex.core.JaxprEqn,
            ins: list[TracedValue]) -> list[TracedValue]:
  """Reductions (`reduce_sum`, `argmax`, ...): reduced axes are pinned, the others kept."""
  (v,) = ins
  axes = set(eqn.params["axes"])
  for a in axes:
    t.pin(v.labels[a])
  kept = [a for a in range(len(v.shape)) if a not in axes]
  out = v.with_axes(out_shapes(eqn)[0], [v.labels[a] for a in kept],
                    [v.sources[a] for a in kept] if not v.dependent else [])
  return [dataclasses.replace(out, zero=v.zero and eqn.primitive.name.startswith("reduce_"))]


def _window(t: ChannelTracer, eqn: jex.core.JaxprEqn,
            ins: list[TracedValue]) -> list[TracedValue]:
  """Pooling (`reduce_window_*`): axes with a window or stride lose their labels (pinned)."""
  p = eqn.params
  operands = ins[: len(ins) // 2] if eqn.primitive.name == "reduce_window" else ins
  outs = []
  for v, shape in zip(operands, out_shapes(eqn)):
    labels = []
    for a in range(len(v.shape)):
      identity = (p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
                  and tuple(p["padding"][a]) == (0, 0) and p["base_dilation"][a] == 1
                  and p["window_dilation"][a] == 1)
      if not identity:
        t.pin(v.labels[a])
      labels.append(v.labels[a] if identity else None)
    outs.append(v.with_axes(shape, labels, list(v.sources or ())))
  return outs


def _cumulative(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                ins: list[TracedValue]) -> list[TracedValue]:
  """Cumulative ops (`cumsum`, ...): the accumulated axis is pinned and loses its labels."""
  (v,) = ins
  axis = eqn.params["axis"]
  t.pin(v.labels[axis])
  labels = list(v.labels)
  labels[axis] = None
  return [v.with_axes(v.shape, labels, list(v.sources or ()))]


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
               "reduce_or", "reduce_xor", "argmax", "argmin")
_WINDOWS = ("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window")
_CUMULATIVE = ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")

RULES: dict[str, PrimitiveRule] = {
    **{name: PrimitiveRule(_reduce) for name in _REDUCTIONS},
    **{name: PrimitiveRule(_window) for name in _WINDOWS},
    **{name: PrimitiveRule(_cumulative) for name in _CUMULATIVE},
}
"""The built-in rules of reductions, windows and cumulative ops, by primitive name."""
