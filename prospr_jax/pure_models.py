"""Any JAX model as the two pure functions structured pruning needs.

    apply(params, state, x) -> outputs               # eval mode: traced for channel groups
    loss(params, state, batch) -> (loss, new_state)  # the scoring objective (train mode)

`as_pure_model(model, variables)` accepts:

* a Flax linen `Module` with its `variables` (`{'params': ..., 'batch_stats': ...}`): params
  are `variables['params']`, state the other collections. A module whose `__call__` takes a
  `train` argument is applied with `train=False` and scored with `LinenLoss(model)` (train mode,
  BatchNorm on batch statistics), as the project's zoo; others are applied as they are;
* a Flax NNX `Module` (`variables=None`): params are `nnx.state(model, nnx.Param)`, state the
  rest; applied after `.eval()` and scored after `.train()` on copies made by `nnx.merge`;
* a function `apply_fn(params, x)` with `variables` = its params (no state).

Without a `train` mode, the default loss is the cross-entropy of the eval-mode outputs on
`batch['image']` against `batch['label']`. Each function is a frozen dataclass (hashable), so
jitted criteria compile once per model.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from prospr_jax.adapters import LinenLoss, cross_entropy
from prospr_jax.tree_types import PyTree, StatefulLossFn

ApplyFn = Callable[[PyTree, PyTree, Any], Any]
"""`apply(params, state, x) -> outputs`, eval mode."""


@dataclasses.dataclass(frozen=True)
class PureModel:
  """A model as pure functions of `(params, state)` (module docstring)."""

  apply: ApplyFn
  loss: StatefulLossFn


@dataclasses.dataclass(frozen=True)
class ApplyLoss:
  """`loss(params, state, batch) = (cross_entropy(apply(params, state, image), label), state)`."""

  apply: ApplyFn

  def __call__(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[jax.Array, PyTree]:
    return cross_entropy(self.apply(params, state, batch["image"]), batch["label"]), state


def takes_train(module: nn.Module) -> bool:
  """Whether a linen module's `__call__` has a `train` parameter."""
  return "train" in inspect.signature(type(module).__call__).parameters


@dataclasses.dataclass(frozen=True)
class LinenEvalApply:
  """`module.apply({'params': params, **state}, x[, train=False])`: a function of the state too,
  unlike `prospr_jax.adapters.LinenApply` (SynFlow's `apply_fn(params, x)`)."""

  module: nn.Module

  def __call__(self, params: PyTree, state: PyTree, x: Any) -> Any:
    kwargs = {"train": False} if takes_train(self.module) else {}
    return self.module.apply({"params": params, **state}, x, **kwargs)


@dataclasses.dataclass(frozen=True)
class NnxApply:
  """`nnx.merge(graphdef, params, state)` in eval mode, called on `x`."""

  graphdef: nnx.GraphDef

  def __call__(self, params: PyTree, state: PyTree, x: Any) -> Any:
    module = nnx.merge(self.graphdef, params, state, copy=True)
    module.eval()
    return module(x)


@dataclasses.dataclass(frozen=True)
class NnxLoss:
  """Cross-entropy of the merged module in train mode; returns its updated state."""

  graphdef: nnx.GraphDef

  def __call__(self, params: PyTree, state: PyTree, batch: PyTree) -> tuple[jax.Array, PyTree]:
    module = nnx.merge(self.graphdef, params, state, copy=True)  # fresh variables: mutable here
    module.train()
    loss = cross_entropy(module(batch["image"]), batch["label"])
    return loss, nnx.split(module, nnx.Param, ...)[2]


@dataclasses.dataclass(frozen=True)
class FunctionApply:
  """`apply_fn(params, x)` of a plain JAX model (no state)."""

  apply_fn: Callable[[PyTree, Any], Any]

  def __call__(self, params: PyTree, state: PyTree, x: Any) -> Any:
    del state
    return self.apply_fn(params, x)


def as_pure_model(
    model: nn.Module | nnx.Module | Callable[[PyTree, Any], Any],
    variables: PyTree | None,
    loss_fn: StatefulLossFn | None = None,
) -> tuple[PureModel, PyTree, PyTree]:
  """`(pure model, params, state)` of a linen, NNX or plain-function model (module docstring).

  Args:
    model: a linen module, an NNX module, or `apply_fn(params, x)`.
    variables: linen variables; `None` for NNX; the params for a function.
    loss_fn: a `loss(params, state, batch) -> (loss, new_state)` replacing the default.
  """
  if isinstance(model, nn.Module):
    if variables is None or "params" not in variables:
      raise ValueError("A linen model needs its variables {'params': ..., ...}.")
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    apply = LinenEvalApply(model)
    default_loss = LinenLoss(model) if takes_train(model) else ApplyLoss(apply)
  elif isinstance(model, nnx.Module):
    if variables is not None:
      raise ValueError("Pass variables=None for an NNX model: its state is read from the module.")
    graphdef, params, state = nnx.split(model, nnx.Param, ...)
    apply, default_loss = NnxApply(graphdef), NnxLoss(graphdef)
  elif callable(model):
    if variables is None:
      raise ValueError("A function apply_fn(params, x) needs its params as `variables`.")
    params, state = variables, {}
    apply = FunctionApply(model)
    default_loss = ApplyLoss(apply)
  else:
    raise TypeError(
        f"Cannot prune a {type(model).__name__}: pass a linen Module, an NNX Module or a "
        "function apply_fn(params, x)."
    )
  return PureModel(apply, default_loss if loss_fn is None else loss_fn), params, state
