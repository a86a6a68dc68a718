"""The structured pruning entry point: trace -> channel groups -> scores -> kept channels -> masks.

    masks = structured_prune(method, model, variables, batches, sparsity)

`model` is a Flax linen module (with its `variables`), a Flax NNX module (`variables=None`) or
a function `apply_fn(params, x)` (with `variables` = its params); see `models.as_pure_model`.
The returned masks have the structure of the params (`variables['params']`,
`nnx.state(model, nnx.Param)`, or the function's params).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
from flax import nnx

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import objective
from prospr_jax.tree_types import PyTree, StatefulLossFn
from prospr_jax.structured import scoring
from prospr_jax.structured.groups import ChannelGroup, channel_groups
from prospr_jax.structured.channel_masks import check_allocation, expand_masks, select_channels
from prospr_jax.pure_models import PureModel, as_pure_model
from prospr_jax.structured.trace_types import ChannelTrace
from prospr_jax.structured.tracing import trace_channels

Model = nn.Module | nnx.Module | Callable[[PyTree, Any], Any]


@dataclasses.dataclass(frozen=True)
class TracedModel:
  """A model with its channel trace and groups.

  Attributes:
    pure: the model's `apply` (eval) and `loss` functions of `(params, state)`.
    params: its params.
    state: its other variables (`{}` if none).
    trace: the channel trace of `pure.apply` on the example input.
    groups: the channel groups, in program order.
  """

  pure: PureModel
  params: PyTree
  state: PyTree
  trace: ChannelTrace
  groups: list[ChannelGroup]


def _example_input(example_input: Any, batches: PyTree | Sequence[PyTree] | None) -> Any:
  if example_input is not None:
    return example_input
  if batches is None:
    raise ValueError(
        "Structured pruning traces the model on an example input: pass example_input= (an "
        "input batch or a jax.ShapeDtypeStruct) or batches with an 'image' entry."
    )
  return objective.as_batch_list(batches)[0]["image"]


def trace_model(
    model: Model,
    variables: PyTree | None,
    example_input: Any,
    *,
    loss_fn: StatefulLossFn | None = None,
) -> TracedModel:
  """Traces `model` (module docstring) on `example_input` and derives its channel groups.

  Raises:
    UnsupportedPrimitiveError: if the program uses a primitive the tracer cannot follow.
    TypeError: if a params leaf is not floating point.
  """
  pure, params, state = as_pure_model(model, variables, loss_fn)
  masks_lib.check_float_params(params)
  trace = trace_channels(pure.apply, params, state, example_input)
  return TracedModel(pure, params, state, trace, channel_groups(trace))


def group_scores(
    method: str,
    model: Model,
    variables: PyTree | None,
    batches: PyTree | Sequence[PyTree] | None = None,
    *,
    example_input: Any = None,
    key: Any = None,
    loss_fn: StatefulLossFn | None = None,
    **options: Any,
) -> scoring.Scores:
  """`{group name: (size,) float64 scores}` of `method` (see `scoring.score_groups`).

  Args:
    method: one of `structured_methods()`.
    model, variables: the model (module docstring).
    batches: a batch `{'image', 'label'}` or a list of them (data-dependent methods).
    example_input: the input to trace (default: the first batch's images).
    key: PRNG key (random scores).
    loss_fn: `loss_fn(params, state, batch) -> (loss, new_state)`, replacing the default
      (`models.as_pure_model`).
    **options: the method's options, e.g. ProsPr's `num_steps` (3), `optimizer` (SGD 0.1),
      `remat` (False).
  """
  scoring.check_method(method, options)
  traced = trace_model(model, variables, _example_input(example_input, batches), loss_fn=loss_fn)
  return _score(method, traced, batches, key, options)


def _score(method: str, traced: TracedModel, batches, key, options) -> scoring.Scores:
  inputs = scoring.ScoreInputs(traced.groups, traced.params, traced.state, traced.pure.loss,
                               batches, key)
  return scoring.score_groups(method, inputs, **options)


def structured_prune(
    method: str,
    model: Model,
    variables: PyTree | None,
    batches: PyTree | Sequence[PyTree] | None,
    sparsity: float,
    *,
    example_input: Any = None,
    key: Any = None,
    min_kept_per_group: int | None = None,
    allocation: Literal["global", "uniform"] = "global",
    loss_fn: StatefulLossFn | None = None,
    **options: Any,
) -> PyTree:
  """Channel-group masks at channel sparsity `sparsity` (the fraction of channels removed).

  `trace_model` -> `scoring.score_groups(method, ...)` -> `select_channels` (global top-k,
  `min_kept_per_group`, `allocation`) -> `expand_masks`. Arguments as in `group_scores` and
  `select_channels`.

  Returns:
    A bool mask pytree with the structure of the params (see `expand_masks`).
  """
  scoring.check_method(method, options)  # the cheap checks before any expensive scoring
  check_allocation(allocation)
  masks_lib.check_sparsity(sparsity)
  traced = trace_model(model, variables, _example_input(example_input, batches), loss_fn=loss_fn)
  scores = _score(method, traced, batches, key, options)
  keep = select_channels(
      scores, sparsity, min_kept_per_group=min_kept_per_group, allocation=allocation
  )
  return expand_masks(traced.params, traced.groups, keep)
