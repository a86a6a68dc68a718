"""Type aliases shared by the whole package: pytrees and their key paths."""

from typing import Any

PyTree = Any
"""A JAX pytree: nested dicts, lists, tuples or dataclasses of arrays (params, masks, scores)."""

KeyPath = tuple[Any, ...]
"""A leaf's path in a pytree, as `jax.tree_util.tree_flatten_with_path` gives it."""
