"""Rules of primitives that move axes: `transpose`, `reshape`, `squeeze`, `broadcast_in_dim`,
`rev`, `iota`.

Labels move with their axes. A `reshape` merging axes of which one is labelled (a flatten: one
channel owns several rows) repeats that axis's labels; other merges and splits pin. New and
size-1-expanded axes of a broadcast get new atoms. In the compacted program the primitives
that carry an output shape are bound with the compacted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.extend as jex
import numpy as np

from prospr_jax.structured.primitive_rule import (
    Kept, PrimitiveRule, compacted_out_shapes, out_shapes, rewrite_params)
from prospr_jax.structured.trace_types import TracedValue
from prospr_jax.structured.tracer import ChannelTracer


def _transpose(t: ChannelTracer, eqn: jex.core.JaxprEqn,
               ins: list[TracedValue]) -> list[TracedValue]:
  (v,) = ins
  perm = eqn.params["permutation"]
  return [v.with_axes(out_shapes(eqn)[0], [v.labels[p] for p in perm],
                      [v.sources[p] for p in perm] if not v.dependent else [])]


def _broadcast_in_dim(t: ChannelTracer, eqn: jex.core.JaxprEqn,
                      ins: list[TracedValue]) -> list[TracedValue]:
  """New and size-1-expanded axes get new atoms (the value is constant along them)."""
  v = ins[0]
  if len(ins) > 1:
    raise t.unsupported("dynamic shapes are not supported")
  shape = out_shapes(eqn)[0]
  labels: list[np.ndarray | None] = [None] * len(shape)
  sources = [frozenset()] * len(shape)
  expanded = False
  mapped = dict(zip(eqn.params["broadcast_dimensions"], range(len(v.shape))))
  for a, n in enumerate(shape):
    if a in mapped and v.shape[mapped[a]] == n:
      labels[a] = v.labels[mapped[a]]
      sources[a] = v.sources[mapped[a]] if not v.dependent else frozenset()
      continue
    if a in mapped:  # a size-1 axis repeated n times
      t.pin(v.labels[mapped[a]])
    labels[a] = t.fresh(n)
    expanded = expanded or n > 1
  out = v.with_axes(shape, labels, sources)
  return [dataclasses.replace(out, zero=v.const_zero if expanded else v.zero)]


def _reshape_blocks(
    old: tuple[int, ...], new: tuple[int, ...]
) -> list[tuple[list[int], list[int]]]:
  """Matches the axes of a reshape: blocks `(old axes, new axes)` with equal sizes.

  A size-1 axis without a size-1 partner is its own block (`([i], [])` or `([], [j])`).
  """
  blocks, i, j = [], 0, 0
  while i < len(old) or j < len(new):
    if i < len(old) and old[i] == 1 and (j == len(new) or new[j] != 1):
      blocks.append(([i], []))
      i += 1
    elif j < len(new) and new[j] == 1 and (i == len(old) or old[i] != 1):
      blocks.append(([], [j]))
      j += 1
    else:
      olds, news, po, pn = [i], [j], old[i], new[j]
      i, j = i + 1, j + 1
      while po != pn:
        if po < pn:
          olds.append(i)
          po *= old[i]
          i += 1
        else:
          news.append(j)
          pn *= new[j]
          j += 1
      blocks.append((olds, news))
  return blocks


def _reshape(t: ChannelTracer, eqn: jex.core.JaxprEqn,
             ins: list[TracedValue]) -> list[TracedValue]:
  """One-to-one axes keep their labels; a merge of axes of which at most one is labelled
  (a flatten) repeats that axis's labels over the others; other merges and splits pin."""
  v = ins[0]
  if len(ins) > 1 or eqn.params.get("dimensions") is not None:
    raise t.unsupported("reshape with dynamic shapes or a dimensions permutation")
  shape = out_shapes(eqn)[0]
  labels: list[np.ndarray | None] = [None] * len(shape)
  sources = [frozenset()] * len(shape)
  if 0 in v.shape:  # an empty array: no positions to follow
    return [v.with_axes(shape, labels, sources)]
  for olds, news in _reshape_blocks(v.shape, shape):
    if len(news) == 1 and len(olds) == 1:
      labels[news[0]] = v.labels[olds[0]]
      sources[news[0]] = v.sources[olds[0]] if not v.dependent else frozenset()
      continue
    labelled = [a for a in olds if v.labels[a] is not None]
    if len(news) == 1 and len(labelled) == 1 and olds:
      (a,) = labelled
      grid = np.meshgrid(*(np.arange(v.shape[b]) for b in olds), indexing="ij")
      labels[news[0]] = v.labels[a][grid[olds.index(a)].ravel()]
      sources[news[0]] = v.sources[a] if not v.dependent else frozenset()
      continue
    for a in olds:
      t.pin(v.labels[a])
    for b in news:
      labels[b] = t.fresh(1) if shape[b] == 1 else None
  return [v.with_axes(shape, labels, sources)]


def _squeeze(t: ChannelTracer, eqn: jex.core.JaxprEqn,
             ins: list[TracedValue]) -> list[TracedValue]:
  (v,) = ins
  dims = {d % len(v.shape) for d in eqn.params["dimensions"]}
  for a in dims:
    t.pin(v.labels[a])
  kept = [a for a in range(len(v.shape)) if a not in dims]
  return [v.with_axes(out_shapes(eqn)[0], [v.labels[a] for a in kept],
                      [v.sources[a] for a in kept] if not v.dependent else [])]


def _rev(t: ChannelTracer, eqn: jex.core.JaxprEqn,
         ins: list[TracedValue]) -> list[TracedValue]:
  (v,) = ins
  labels = [None if lab is None else (lab[::-1] if a in eqn.params["dimensions"] else lab)
            for a, lab in enumerate(v.labels)]
  return [v.with_axes(v.shape, labels, list(v.sources or ()))]


def _iota(t: ChannelTracer, eqn: jex.core.JaxprEqn,
          ins: list[TracedValue]) -> list[TracedValue]:
  (shape,) = out_shapes(eqn)
  labels = [None if a == eqn.params["dimension"] else t.fresh(n) for a, n in enumerate(shape)]
  return [TracedValue(shape, tuple(labels), tuple(frozenset() for _ in shape), zero=False)]


def _compacted_shape(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Kept],
                     kept_out: list[Kept]) -> tuple[int, ...]:
  """`shape` / `new_sizes`: the compacted output shape."""
  return compacted_out_shapes(eqn, kept_out)[0]


RULES: dict[str, PrimitiveRule] = {
    "transpose": PrimitiveRule(_transpose),
    "broadcast_in_dim": PrimitiveRule(_broadcast_in_dim, rewrite_params(shape=_compacted_shape)),
    "reshape": PrimitiveRule(_reshape, rewrite_params(new_sizes=_compacted_shape)),
    "squeeze": PrimitiveRule(_squeeze),
    "rev": PrimitiveRule(_rev),
    "iota": PrimitiveRule(_iota, rewrite_params(shape=_compacted_shape)),
}
"""The built-in rules of axis-moving primitives, by primitive name."""
