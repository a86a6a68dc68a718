"""Deterministic, portable parameter values shared by the authors' PyTorch models and ours.

`authors_models.py` (run with PyTorch) and `tests/test_paper_models.py` (JAX) both fill every
layer with `fill(shape, seed, role)`, in PyTorch's layout, so a forward pass through the
authors' network and through ours can be compared without storing weights. Pure NumPy:
integer hashing (splitmix64) gives the same float64 values on every platform and version.
"""

from __future__ import annotations

import math

import numpy as np

_MASK = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15

ROLES = ("weight", "bias", "running_mean", "running_var")
"""PyTorch names of the tensors of a Conv2d / Linear / BatchNorm2d that are filled."""


def uniform(n: int, seed: int) -> np.ndarray:
  """`n` float64 values in [0, 1): splitmix64 of `seed * golden + (0, 1, ..., n - 1)`."""
  z = np.arange(n, dtype=np.uint64) + np.uint64(seed * _GOLDEN & _MASK)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def fill(shape: tuple[int, ...], layer: int, role: str) -> np.ndarray:
  """Values for the `role` tensor (PyTorch layout `shape`) of the `layer`-th layer in call order.

  Weights (`ndim > 1`, `[out, in, ...]`): uniform with variance `2 / fan_in`, so activations
  keep their scale through ReLU layers. Biases: uniform in [-0.1, 0.1). BatchNorm
  `weight` (1-D): [0.5, 1.5); `running_mean`: [-0.1, 0.1); `running_var`: [0.5, 1.5).
  """
  u = uniform(math.prod(shape), 4 * layer + ROLES.index(role)).reshape(shape)
  if role == "weight" and len(shape) > 1:
    return (2 * u - 1) * math.sqrt(6 * shape[0] / math.prod(shape))
  if role in ("weight", "running_var"):
    return 0.5 + u
  return 0.2 * u - 0.1


def image(shape: tuple[int, ...]) -> np.ndarray:
  """An input batch in [-1, 1), PyTorch layout `[B, C, H, W]`."""
  return 2 * uniform(math.prod(shape), 2**20).reshape(shape) - 1
