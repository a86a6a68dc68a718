"""The one objective signature every data-dependent criterion is written against.

    loss_fn(params, state, batch) -> (loss, new_state)

`state` is non-trainable model state (e.g. `{'batch_stats': ...}` for BatchNorm, `{}` for
none). Criteria thread it through their inner steps functionally and never return it, so a
caller's state is never changed. A plain `loss_fn(params, batch) -> loss` (any JAX model) is
accepted too: pass `state=None` and it is wrapped by `with_state`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from prospr_jax.tree_types import PlainLossFn, PyTree, StatefulLossFn



@dataclasses.dataclass(frozen=True)
class _IgnoreState:
  """Turns `loss_fn(params, batch)` into `loss_fn(params, state, batch) -> (loss, state)`.

  A frozen dataclass (hashable by the wrapped function) so that jitted criteria taking it as a
  static argument compile once per user function.
  """

  loss_fn: PlainLossFn

  def __call__(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[jax.Array, PyTree]:
    return self.loss_fn(params, batch), state


def with_state(loss_fn: Callable[..., Any], state: PyTree | None) -> tuple[StatefulLossFn, PyTree]:
  """Normalizes a user objective: `state=None` means `loss_fn(params, batch) -> loss`."""
  if state is None:
    return _IgnoreState(loss_fn), {}
  return loss_fn, state


def as_batch_list(batches: PyTree | Sequence[PyTree]) -> list[PyTree]:
  """Returns `batches` as a non-empty list of batch pytrees (a single dict counts as one)."""
  if isinstance(batches, dict) or not isinstance(batches, Sequence):
    batches = [batches]
  if not batches:
    raise ValueError("At least one batch is needed to compute a data-dependent saliency.")
  return list(batches)


def masked(params: PyTree, c: PyTree) -> PyTree:
  """`c ⊙ params` leaf by leaf; `c`'s leaves broadcast (per-channel masks)."""
  return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, c)


def reduce_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums `x` over the axes along which an array of `shape` is broadcast to `x.shape`."""
  axes = tuple(i for i, (a, b) in enumerate(zip(shape, x.shape)) if a == 1 and b != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def mean_tree(trees: Sequence[PyTree]) -> PyTree:
  """Leaf-wise mean of a non-empty list of pytrees with the same structure."""
  return jax.tree.map(lambda *xs: sum(xs) / len(xs), *trees)
