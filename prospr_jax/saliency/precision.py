"""Scoring in float64: a scope that enables 64-bit floats and casts pytrees into it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

from prospr_jax.tree_types import PyTree


@contextlib.contextmanager
def float64_scope(enabled: bool) -> Iterator[Callable[[PyTree], PyTree]]:
  """Within: 64-bit floats enabled if `enabled`; yields a function casting a pytree's
  floating-point leaves to float64 (or returning the pytree as it is when not `enabled`)."""

  def cast(tree: PyTree) -> PyTree:
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64)
        if enabled and jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)

  with jax.enable_x64(True) if enabled else contextlib.nullcontext():
    yield cast
