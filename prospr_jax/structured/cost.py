"""The size of a model: params, and multiply-accumulates per example counted from its jaxpr."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend as jex
import numpy as np

from prospr_jax.structured.rule_registry import rule_for
from prospr_jax.tree_types import PyTree


def jaxpr_macs(jaxpr: jex.core.Jaxpr) -> int:
  """Multiply-accumulates of every equation whose primitive rule counts them (the built-in
  ones: convolutions, `conv_ops`' `prospr_conv` and `dot_general`), nested jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    rule = rule_for(eqn.primitive.name)
    total += 0 if rule is None else rule.macs(eqn)
    for sub in jex.core.jaxprs_in_params(eqn.params):
      total += jaxpr_macs(sub)
  return total


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
  """MACs per example of `fn(*args)`: convs and dot products, divided by the batch size (the
  leading axis of the last argument, the input). Counted from shapes (`jax.make_jaxpr`)."""
  batch = jax.tree.leaves(args[-1])[0].shape[0]
  return jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr) // batch


def count_params(params: PyTree) -> int:
  """Number of entries of all leaves of `params`."""
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class CompactionReport:
  """Params and multiply-accumulates per example (convs, dot products) before and after."""

  params_before: int
  params_after: int
  macs_before: int
  macs_after: int
