"""Type aliases shared by the whole package: pytrees, their key paths, and loss functions."""

from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
"""A JAX pytree: nested dicts, lists, tuples or dataclasses of arrays (params, masks, scores)."""

KeyPath = tuple[Any, ...]
"""A leaf's path in a pytree, as `jax.tree_util.tree_flatten_with_path` gives it."""

StatefulLossFn = Callable[[PyTree, PyTree, PyTree], tuple[jax.Array, PyTree]]
"""`loss_fn(params, state, batch) -> (scalar loss, new_state)`: the objective every
data-dependent criterion is written against (`state`: e.g. BatchNorm statistics, `{}` if none)."""

PlainLossFn = Callable[[PyTree, PyTree], jax.Array]
"""`loss_fn(params, batch) -> scalar loss` of a model without state."""
