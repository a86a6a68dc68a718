"""Rules of contractions: `dot_general`, `conv_general_dilated` and `conv_ops`' `prospr_conv`.

A contraction joins the contracted axes position by position and gives its output the labels
of the free axes: the output features of a dense or conv layer carry the atoms of its kernel's
output axis (a `MEMBER` and producer), its input axis is a `CONSUMER`. It is only followed
where a removed position contributes exactly 0 in the masked model (one side is masked params,
or the activation is zero there); otherwise its positions are pinned. A depthwise conv
(`feature_group_count` = input channels) joins each output channel with its input channel;
other grouped convs pin their channels. Convolution windows pin the spatial axes.
"""

from __future__ import annotations

import math
from typing import Any

import jax.extend as jex
import numpy as np
from jax import lax

from prospr_jax.ops import conv_ops
from prospr_jax.structured.primitive_rule import (
    Kept, PrimitiveRule, out_shapes, rewrite_params)
from prospr_jax.structured.trace_types import CONSUMER, MEMBER, TracedValue
from prospr_jax.structured.tracer import ChannelTracer


def _contract(t: ChannelTracer, lhs: TracedValue, la: int, rhs: TracedValue, ra: int) -> None:
  """Contracts `lhs` axis `la` with `rhs` axis `ra` position by position."""
  left, right = lhs.labels[la], rhs.labels[ra]
  if lhs.dependent != rhs.dependent:
    weight, axis = (rhs, ra) if lhs.dependent else (lhs, la)
    t.mark(weight.sources[axis], CONSUMER)
  followed = (lhs.dependent or rhs.dependent) and (lhs.zero or rhs.zero)
  if left is None or right is None or not followed:
    t.pin(left)
    t.pin(right)
  else:
    t.atoms.join(left, right)


def _layer(lhs: TracedValue, rhs: TracedValue) -> tuple[TracedValue | None, int]:
  """The weight of a layer (an input-independent operand against a dependent one), its depth."""
  if lhs.dependent == rhs.dependent:
    return None, max(lhs.depth, rhs.depth)
  return (rhs if lhs.dependent else lhs), max(lhs.depth, rhs.depth) + 1


def _dot_general(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                 ins: list[TracedValue]) -> list[TracedValue]:
  lhs, rhs = ins
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  for a, b in zip(lc, rc):
    _contract(t, lhs, a, rhs, b)
  weight, depth = _layer(lhs, rhs)
  labels, sources = [], []
  for a, b in zip(lb, rb):
    labels.append(t.join_axis([lhs.labels[a], rhs.labels[b]]))
    if weight is not None:
      t.mark(weight.sources[b if weight is rhs else a], MEMBER)
    elif not lhs.dependent:
      sources.append(lhs.sources[a] | rhs.sources[b])
  for operand, skip in ((lhs, set(lc) | set(lb)), (rhs, set(rc) | set(rb))):
    for a in range(len(operand.shape)):
      if a in skip:
        continue
      labels.append(operand.labels[a])
      if weight is operand:
        t.mark(operand.sources[a], MEMBER, producer_depth=depth)
      elif not operand.dependent and weight is None:
        sources.append(operand.sources[a])
  dependent = lhs.dependent or rhs.dependent
  return [TracedValue(out_shapes(eqn)[0], tuple(labels), None if dependent else tuple(sources),
                      lhs.zero and rhs.zero, depth=depth)]


def conv_layout(eqn: jex.core.JaxprEqn) -> tuple[lax.ConvDimensionNumbers, int, int]:
  """`(dimension_numbers, feature_group_count, batch_group_count)` of a convolution equation:
  a `conv_general_dilated`, or `conv_ops`' `prospr_conv` (channels-last, ungrouped)."""
  if eqn.primitive is conv_ops.conv_p:
    return conv_ops.channels_last(eqn.invars[0].aval.ndim - 2), 1, 1
  params = eqn.params
  return params["dimension_numbers"], params["feature_group_count"], params["batch_group_count"]


def _conv(t: ChannelTracer, eqn: jex.core.JaxprEqn,
          ins: list[TracedValue]) -> list[TracedValue]:
  lhs, rhs = ins
  dn, groups, batch_groups = conv_layout(eqn)
  (lb, lf, *lsp), (ro, ri, *rsp), (ob, of, *_) = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  if not lhs.dependent or rhs.dependent:
    raise t.unsupported("only a convolution of an activation (lhs) with a kernel computed from "
                        "params, state or constants (rhs) is followed")
  for labels in [lhs.labels[a] for a in lsp] + [rhs.labels[a] for a in rsp]:
    t.pin(labels)  # windows mix the spatial positions
  channels = lhs.shape[lf]
  depth = max(lhs.depth, rhs.depth) + 1
  out = rhs.labels[ro]
  if batch_groups == 1 and groups == 1:
    _contract(t, lhs, lf, rhs, ri)
  elif batch_groups == 1 and groups == channels and lhs.labels[lf] is not None and out is not None:
    multiplier = rhs.shape[ro] // channels  # output channel o reads input channel o // multiplier
    t.atoms.join(out, np.repeat(lhs.labels[lf], multiplier))
    t.pin(rhs.labels[ri])
  else:  # grouped (or batch-grouped) convolutions: keep all their channels
    for labels in (lhs.labels[lf], out, rhs.labels[ri]):
      t.pin(labels)
  t.mark(rhs.sources[ro], MEMBER, producer_depth=depth)
  t.mark(rhs.sources[ri], CONSUMER)
  labels: list[np.ndarray | None] = [None] * len(lhs.shape)
  labels[ob], labels[of] = lhs.labels[lb], out
  return [TracedValue(out_shapes(eqn)[0], tuple(labels), None, lhs.zero and rhs.zero,
                      depth=depth)]


def _feature_groups(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                    kept_out: list[Kept]) -> int:
  """`feature_group_count`: a depthwise conv keeps one group per remaining input channel."""
  groups = eqn.params["feature_group_count"]
  channels_axis = eqn.params["dimension_numbers"].lhs_spec[1]
  if groups > 1 and groups == eqn.invars[0].aval.shape[channels_axis]:
    return ins[0].shape[channels_axis]
  return groups


def _conv_macs(eqn: jex.core.JaxprEqn) -> int:
  """Every output entry costs one MAC per kernel entry of its output feature."""
  kernel = eqn.invars[1].aval.shape
  out_features = kernel[conv_layout(eqn)[0].rhs_spec[0]]
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features


def _dot_macs(eqn: jex.core.JaxprEqn) -> int:
  """Every output entry costs one MAC per contracted position."""
  (lc, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[a] for a in lc)


RULES: dict[str, PrimitiveRule] = {
    "dot_general": PrimitiveRule(_dot_general, macs=_dot_macs),
    "conv_general_dilated": PrimitiveRule(
        _conv, rewrite_params(feature_group_count=_feature_groups), macs=_conv_macs),
    conv_ops.conv_p.name: PrimitiveRule(_conv, macs=_conv_macs),
}
"""The built-in contraction rules, by primitive name."""
