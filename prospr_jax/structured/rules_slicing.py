"""Rules of primitives that cut or join axes: `slice`, `split`, `concatenate`, `pad`.

Labels are cut with their axes; along `concatenate`'s axis the operands' labels follow each
other (offsets) while its other axes join; padded positions are new atoms (interior padding
of a labelled axis pins it). In the compacted program their index parameters are recomputed
for the remaining positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from prospr_jax.structured.primitive_rule import (
    Kept, PrimitiveRule, any_dependent, compacted_out_shapes, max_depth, out_shapes,
    rewrite_params)
from prospr_jax.structured.trace_types import MEMBER, TracedValue
from prospr_jax.structured.tracer import ChannelTracer


def _slice(t: ChannelTracer, eqn: jex.core.JaxprEqn,
           ins: list[TracedValue]) -> list[TracedValue]:
  (v,) = ins
  p = eqn.params
  strides = p["strides"] or (1,) * len(v.shape)
  labels = [None if lab is None else lab[s:e:k]
            for lab, s, e, k in zip(v.labels, p["start_indices"], p["limit_indices"], strides)]
  return [v.with_axes(out_shapes(eqn)[0], labels, list(v.sources or ()))]


def _positions_in(kept: np.ndarray | None, wanted: np.ndarray) -> np.ndarray:
  """Indices, in the compacted axis, of the original positions `wanted` (all of them kept)."""
  return wanted if kept is None else np.searchsorted(kept, wanted)


def _take_axis(x: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
  """`x`'s entries at the constant `index` along `axis` (a slice when contiguous)."""
  if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
    return lax.slice_in_dim(x, int(index[0]), int(index[0]) + len(index), axis=axis)
  return jnp.take(x, jnp.asarray(index, jnp.int32), axis=axis)


def _compact_slice(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                   kept_out: list[Kept]) -> list[Any]:
  """`slice`: the original slice on untouched axes, a constant gather on pruned ones."""
  (x,), (k_in,), (k_out,) = ins, kept_in, kept_out
  shape = eqn.invars[0].aval.shape
  p = eqn.params
  strides = p["strides"] or (1,) * len(shape)
  starts, limits, steps, takes = [], [], [], []
  for a, (s, e, step) in enumerate(zip(p["start_indices"], p["limit_indices"], strides)):
    if k_in[a] is None:
      starts.append(s), limits.append(e), steps.append(step)
      continue
    starts.append(0), limits.append(x.shape[a]), steps.append(1)
    wanted = np.arange(s, e, step)
    wanted = wanted if k_out[a] is None else wanted[k_out[a]]
    takes.append((a, _positions_in(k_in[a], wanted)))
  y = lax.slice(x, starts, limits, steps)
  for a, index in takes:
    y = _take_axis(y, index, a)
  return [y]


def _split(t: ChannelTracer, eqn: jex.core.JaxprEqn,
           ins: list[TracedValue]) -> list[TracedValue]:
  (v,) = ins
  axis = eqn.params["axis"]
  outs, start = [], 0
  for shape in out_shapes(eqn):
    labels = list(v.labels)
    if labels[axis] is not None:
      labels[axis] = labels[axis][start:start + shape[axis]]
    start += shape[axis]
    outs.append(v.with_axes(shape, labels, list(v.sources or ())))
  return outs


def _split_sizes(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                 kept_out: list[Kept]) -> tuple[int, ...]:
  """`split`'s `sizes`: the compacted outputs' sizes along the split axis."""
  return tuple(s[eqn.params["axis"]] for s in compacted_out_shapes(eqn, kept_out))


def _concatenate(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                 ins: list[TracedValue]) -> list[TracedValue]:
  """Along `dimension` the operands' labels follow each other (offsets); other axes join."""
  dim = eqn.params["dimension"]
  (shape,) = out_shapes(eqn)
  dependent = any_dependent(ins)
  labels, sources = [], []
  for a in range(len(shape)):
    if a == dim:
      parts = [v.labels[a] for v in ins]
      if any(p is None for p in parts):
        for p in parts:
          t.pin(p)
        labels.append(None)
      else:
        labels.append(np.concatenate(parts))
    else:
      labels.append(t.join_axis([v.labels[a] for v in ins]))
    if dependent:
      for v in ins:
        if not v.dependent:
          t.mark(v.sources[a], MEMBER)
      sources.append(frozenset())
    else:
      sources.append(frozenset().union(*(v.sources[a] for v in ins)))
  labels = tuple(labels)
  zero = all(t.zero_at_removed(v, shape, labels) for v in ins)
  return [TracedValue(shape, labels, None if dependent else tuple(sources), zero,
                      all(v.const_zero for v in ins), max_depth(ins))]


def _pad(t: ChannelTracer, eqn: jex.core.JaxprEqn,
         ins: list[TracedValue]) -> list[TracedValue]:
  """Padded positions are new atoms; interior padding of a labelled axis pins it."""
  v, pad_value = ins
  (shape,) = out_shapes(eqn)
  labels = []
  for lab, (lo, hi, interior) in zip(v.labels, eqn.params["padding_config"]):
    lo, hi, interior = int(lo), int(hi), int(interior)
    if lab is None or (lo, hi, interior) == (0, 0, 0):
      labels.append(lab)
    elif interior:
      t.pin(lab)
      labels.append(None)
    else:
      kept = lab[max(-lo, 0): len(lab) - max(-hi, 0)]
      labels.append(np.concatenate([t.fresh(max(lo, 0)), kept, t.fresh(max(hi, 0))]))
  out = v.with_axes(shape, labels, list(v.sources or ()))
  return [dataclasses.replace(out, zero=v.zero and pad_value.const_zero,
                              const_zero=v.const_zero and pad_value.const_zero)]


def _compact_pad(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                 kept_out: list[Kept]) -> list[Any]:
  """`pad`: on a pruned axis, the low/high padding shrinks to the remaining padded positions."""
  config = []
  n_in = eqn.invars[0].aval.shape
  for a, (lo, hi, interior) in enumerate(eqn.params["padding_config"]):
    lo, hi, interior = int(lo), int(hi), int(interior)
    k_in, k_out = kept_in[0][a], kept_out[0][a]
    if k_in is None and k_out is None:
      config.append((lo, hi, interior))
      continue
    n_out = eqn.outvars[0].aval.shape[a]
    out_kept = np.zeros(n_out, bool)
    out_kept[np.arange(n_out) if k_out is None else k_out] = True
    in_kept = np.zeros(n_in[a], bool)
    in_kept[np.arange(n_in[a]) if k_in is None else k_in] = True
    new_lo = int(out_kept[:lo].sum()) if lo >= 0 else -int(in_kept[:-lo].sum())
    new_hi = int(out_kept[n_out - hi:].sum()) if hi >= 0 else -int(in_kept[n_in[a] + hi:].sum())
    config.append((new_lo, new_hi, interior))
  return [eqn.primitive.bind(*ins, padding_config=tuple(config))]


RULES: dict[str, PrimitiveRule] = {
    "slice": PrimitiveRule(_slice, _compact_slice),
    "split": PrimitiveRule(_split, rewrite_params(sizes=_split_sizes)),
    "concatenate": PrimitiveRule(_concatenate),
    "pad": PrimitiveRule(_pad, _compact_pad),
}
"""The built-in rules of slicing and joining primitives, by primitive name."""
