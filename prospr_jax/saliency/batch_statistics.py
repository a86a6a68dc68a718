"""BatchNorm running statistics set to one batch's statistics ("calibration").

    calibrate(params, state, x) -> state

returns the model state after one train-mode pass over `x` in which every BatchNorm's running
mean and variance become the mean and variance of `x`'s activations (PyTorch's `momentum=1.0`
after `reset_running_stats()`, which NTK-SAP's authors use before scoring in eval mode). The
caller's `state` is never modified. One adapter per model kind of `prospr_jax.structured.
pure_models` (linen, NNX); a plain `apply_fn(params, x)` has no state and needs none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from prospr_jax.pure_models import LinenEvalApply, NnxApply, takes_train
from prospr_jax.tree_types import PyTree

CalibrateFn = Callable[[PyTree, PyTree, jax.Array], PyTree]
"""`calibrate(params, state, x) -> state` with BatchNorm running statistics from `x`."""


@dataclasses.dataclass(frozen=True)
class LinenBatchStatistics:
  """Calibration of a linen model whose `__call__` takes `train` and whose BatchNorms are
  `flax.linen.BatchNorm`: each one's `batch_stats` `mean` and `var` are overwritten with the
  mean and variance of its input over all but its feature axes, whatever its `momentum`.

  `unbiased_variance=True` divides by `n - 1` (`n` the number of reduced entries), as PyTorch
  stores its running variance; False divides by `n`, as Flax normalizes in train mode.
  """

  model: nn.Module
  unbiased_variance: bool = True

  def __post_init__(self):
    if not takes_train(self.model):
      raise ValueError(
          f"{type(self.model).__name__}.__call__ has no `train` argument, so it has no "
          "train mode in which to collect batch statistics; a model without BatchNorm needs "
          "no calibration (pass calibrate_fn=None)."
      )

  def _overwrite_statistics(self, next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
      x = args[0]
      axes = module.axis if isinstance(module.axis, tuple) else (module.axis,)
      features = {a % x.ndim for a in axes}
      reduced = tuple(a for a in range(x.ndim) if a not in features)
      module.put_variable("batch_stats", "mean", jnp.mean(x, axis=reduced))
      module.put_variable("batch_stats", "var",
                          jnp.var(x, axis=reduced, ddof=int(self.unbiased_variance)))
    return out

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> PyTree:
    with nn.intercept_methods(self._overwrite_statistics):
      _, updated = self.model.apply(
          {"params": params, **state}, x, train=True, mutable=["batch_stats"])
    return {**state, **updated}


@dataclasses.dataclass(frozen=True)
class NnxBatchStatistics:
  """Calibration of an NNX model: a copy with every `nnx.BatchNorm`'s momentum set to 0 runs
  once in train mode. NNX stores the biased variance (divided by `n`), so the running
  variance is `(n - 1) / n` times PyTorch's."""

  graphdef: nnx.GraphDef

  def __call__(self, params: PyTree, state: PyTree, x: jax.Array) -> PyTree:
    module = nnx.merge(self.graphdef, params, state, copy=True)
    for _, node in nnx.iter_graph(module):
      if isinstance(node, nnx.BatchNorm):
        node.momentum = 0.0
    module.train()
    module(x)
    return nnx.split(module, nnx.Param, ...)[2]


def batch_statistics_for(apply_fn: Callable[..., jax.Array]) -> CalibrateFn | None:
  """The calibration matching a `prospr_jax.pure_models` apply function: linen
  models with a `train` argument and NNX models get theirs; any other model (no BatchNorm
  state to set) gets None."""
  if isinstance(apply_fn, LinenEvalApply) and takes_train(apply_fn.module):
    return LinenBatchStatistics(apply_fn.module)
  if isinstance(apply_fn, NnxApply):
    return NnxBatchStatistics(apply_fn.graphdef)
  return None
