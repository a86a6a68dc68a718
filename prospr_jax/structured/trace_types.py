"""What channel tracing knows about a program: per-value labels, leaves, roles, and the result.

Every position of every axis of every leaf (params, state, jaxpr constants) and of the input is
an *atom* (an int); `atoms.ChannelAtoms` joins the atoms that must be removed together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import jax.extend as jex
import numpy as np


Labels = tuple[np.ndarray | None, ...]
"""Per axis: the atom of each position, or `None` (the axis carries no channels)."""
LeafAxis = tuple[int, int]
"""`(leaf index, axis)`."""
Site = tuple[int, ...]
"""Equation indices from the top-level jaxpr down to a nested jaxpr."""

MEMBER, CONSUMER = "member", "consumer"
LeafKind = Literal["param", "state", "const"]


@dataclasses.dataclass(frozen=True)
class TracedValue:
  """What the tracer knows about one jaxpr value.

  Attributes:
    shape: the value's shape.
    labels: per-axis atom labels (`Labels`).
    sources: for an input-independent value, per axis the leaf axes whose positions it carries;
      `None` for a value that depends on the model's input.
    zero: at the positions of a removed channel the value is exactly 0 in the masked model
      (params at removed positions are masked; state, constants and the input are not).
    const_zero: the value is identically 0 (a literal 0 and values broadcast from it).
    depth: the number of layers (contractions with a weight) between the input and this value.
  """

  shape: tuple[int, ...]
  labels: Labels
  sources: tuple[frozenset[LeafAxis], ...] | None
  zero: bool
  const_zero: bool = False
  depth: int = 0

  @property
  def dependent(self) -> bool:
    """Whether the value depends on the model's input."""
    return self.sources is None

  def with_axes(self, shape: tuple[int, ...], labels: list[np.ndarray | None],
                sources: list[frozenset[LeafAxis]]) -> TracedValue:
    """This value with new axes: their shape, labels and (if input-independent) sources."""
    return dataclasses.replace(self, shape=shape, labels=tuple(labels),
                               sources=None if self.dependent else tuple(sources))


@dataclasses.dataclass(frozen=True)
class Leaf:
  """An array the traced program reads: a params or state leaf, or a jaxpr constant.

  Attributes:
    path: '/'-joined path in its tree (params or state), or `const@<site>#<i>` for constants.
    kind: 'param', 'state' or 'const'.
    shape: its shape.
    atoms: per axis, the atoms of its positions.
  """

  path: str
  kind: LeafKind
  shape: tuple[int, ...]
  atoms: tuple[np.ndarray, ...]


@dataclasses.dataclass
class Role:
  """How a leaf axis meets the activations (`tracing`'s module docstring).

  Attributes:
    kind: `MEMBER` or `CONSUMER` (`MEMBER` wins if an axis is both).
    first_use: index (in trace order) of the first equation that gave it this role.
    producer: `(depth, equation index)` of the first contraction whose output features are this
      axis (a conv or dense kernel's output axis), or `None`.
  """

  kind: str
  first_use: int
  producer: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class ChannelTrace:
  """The result of `tracing.trace_channels`.

  Attributes:
    jaxpr: the traced program `apply(params, state, x)`.
    leaves: params leaves, then state leaves (flattening order), then jaxpr constants.
    num_params: how many of `leaves` are params.
    labels: `{(site, var): labels}` for every value of the program (nested jaxprs included).
    consts: `{(site, constvar): leaf index}` for the constants of every (nested) jaxpr.
    roles: `{(leaf index, axis): Role}`.
    roots: the component of every atom.
    pinned: bool per atom, true for the roots of pinned components.
    treedefs: the tree structures of params, state, the input and the output.
    rules: `{primitive name: PrimitiveRule}`, the rules the program was traced with (compaction
      rewrites with the same ones, even if the registry changed since).
  """

  jaxpr: jex.core.ClosedJaxpr
  leaves: tuple[Leaf, ...]
  num_params: int
  labels: dict[tuple[Site, Any], Labels]
  consts: dict[tuple[Site, Any], int]
  roles: dict[LeafAxis, Role]
  roots: np.ndarray
  pinned: np.ndarray
  treedefs: tuple[Any, Any, Any, Any]
  rules: Mapping[str, Any]  # `primitive_rule.PrimitiveRule`s, which import this module
