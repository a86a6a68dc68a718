"""Channel atoms: a union-find over integer atoms with a pinned (never-pruned) flag per
component."""

from __future__ import annotations

import numpy as np


class ChannelAtoms:
  """Integer atoms; `join` merges components, `pin` marks a component as never pruned."""

  def __init__(self) -> None:
    self._parent: list[int] = []
    self._pinned: list[bool] = []

  def new(self, n: int, pinned: bool = False) -> np.ndarray:
    """`n` new atoms, each its own component (pinned or not), as an int64 array."""
    start = len(self._parent)
    self._parent.extend(range(start, start + n))
    self._pinned.extend([pinned] * n)
    return np.arange(start, start + n, dtype=np.int64)

  def find(self, a: int) -> int:
    """The root atom of `a`'s component."""
    parent = self._parent
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  def join(self, a: np.ndarray, b: np.ndarray) -> None:
    """Joins `a[i]` with `b[i]` for every i."""
    for x, y in zip(a.tolist(), b.tolist()):
      rx, ry = self.find(x), self.find(y)
      if rx != ry:
        self._parent[ry] = rx
        self._pinned[rx] = self._pinned[rx] or self._pinned[ry]

  def pin(self, labels: np.ndarray | None) -> None:
    """Pins the components of these atoms (`None`: no atoms)."""
    if labels is not None:
      for x in labels.tolist():
        self._pinned[self.find(x)] = True

  def all_pinned(self, labels: np.ndarray | None) -> bool:
    """Whether every one of these atoms is in a pinned component (`None`: true)."""
    return labels is None or all(self._pinned[self.find(x)] for x in labels.tolist())

  def roots(self) -> np.ndarray:
    """The component (root atom) of every atom."""
    return np.array([self.find(a) for a in range(len(self._parent))], np.int64)

  def pinned_roots(self) -> np.ndarray:
    """Bool per atom: whether it is a root of a pinned component (meaningful for roots only)."""
    return np.array(self._pinned, bool)
