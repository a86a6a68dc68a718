"""Registry of pruning methods by name, and `prune`, the one entry point that returns masks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from prospr_jax import masks as masks_lib
from prospr_jax.saliency import grasp, prospr, simple, snip, synflow
from prospr_jax.saliency.objective import PyTree


@dataclasses.dataclass(frozen=True)
class PruneInputs:
  """What a pruning method may read. Which fields a method needs is in `METHODS[name].needs`."""

  params: PyTree
  loss_fn: Callable[..., Any] | None = None
  batches: PyTree | Sequence[PyTree] | None = None
  state: PyTree | None = None
  apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None
  input_shape: Sequence[int] | None = None
  key: jax.Array | None = None
  filter_fn: masks_lib.FilterFn = masks_lib.default_filter


MethodFn = Callable[..., PyTree]
"""`fn(inputs, sparsity, select, **options) -> bool masks`."""


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered pruning method and what it needs."""

  fn: MethodFn
  needs: tuple[str, ...]


METHODS: dict[str, Method] = {}


def register(name: str, *, needs: tuple[str, ...]):
  """Decorator adding a method to `METHODS` under `name`."""

  def add(fn: MethodFn) -> MethodFn:
    METHODS[name] = Method(fn, needs)
    return fn

  return add


def _one_shot(score_fn: Callable[..., PyTree]) -> MethodFn:
  """Wraps `score_fn(inputs, **options) -> scores` into a method that selects the top scores."""

  def fn(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
    return select(score_fn(inputs, **options), sparsity)

  return fn


_DATA = ("loss_fn", "batches")


def _prospr(inputs: PruneInputs, *, first_order: bool, **options) -> PyTree:
  return prospr.prospr_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      first_order=first_order, **options,
  )


register("prospr", needs=_DATA)(
    _one_shot(functools.partial(_prospr, first_order=False))
)
register("prospr_first_order", needs=_DATA)(
    _one_shot(functools.partial(_prospr, first_order=True))
)


@register("snip", needs=_DATA)
@_one_shot
def _snip(inputs: PruneInputs) -> PyTree:
  return snip.snip_scores(inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state)


@register("grasp", needs=_DATA)
@_one_shot
def _grasp(inputs: PruneInputs) -> PyTree:
  return grasp.grasp_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      filter_fn=inputs.filter_fn,
  )


@register("magnitude", needs=())
@_one_shot
def _magnitude(inputs: PruneInputs) -> PyTree:
  return simple.magnitude_scores(inputs.params)


@register("random", needs=("key",))
@_one_shot
def _random(inputs: PruneInputs) -> PyTree:
  return simple.random_scores(inputs.params, inputs.key)


def _gradual(inputs: PruneInputs, sparsity: float, select, *, allow_regrowth: bool, **options):
  return snip.gradual_sensitivity_masks(
      inputs.loss_fn, inputs.params, inputs.batches, sparsity, select, state=inputs.state,
      allow_regrowth=allow_regrowth, **options,
  )


register("iterative_snip", needs=_DATA)(functools.partial(_gradual, allow_regrowth=False))
register("force", needs=_DATA)(functools.partial(_gradual, allow_regrowth=True))


@register("synflow", needs=("apply_fn", "input_shape"))
def _synflow(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
  return synflow.synflow_masks(
      inputs.apply_fn, inputs.params, inputs.input_shape, sparsity, select, **options
  )


def prune(
    method: str,
    params: PyTree,
    sparsity: float,
    *,
    loss_fn: Callable[..., Any] | None = None,
    batches: PyTree | Sequence[PyTree] | None = None,
    state: PyTree | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    input_shape: Sequence[int] | None = None,
    key: jax.Array | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
    allocation: masks_lib.Allocation = "global",
    min_kept_per_layer: int | None = None,
    **options: Any,
) -> PyTree:
  """Prunes `params` at initialization with the method registered as `method`.

  Args:
    method: a name in `METHODS`: 'prospr', 'prospr_first_order', 'snip', 'grasp',
      'iterative_snip', 'force', 'synflow', 'magnitude', 'random'.
    params: the initial params.
    sparsity: fraction of prunable weights removed, in [0, 1).
    loss_fn: `loss_fn(params, batch) -> loss`, or with `state`,
      `loss_fn(params, state, batch) -> (loss, new_state)` (data-dependent methods).
    batches: a batch or a list of batches for data-dependent methods.
    state: model state such as BatchNorm statistics; never modified.
    apply_fn: `apply_fn(params, x) -> outputs` in eval mode (SynFlow).
    input_shape: one example's input shape (SynFlow).
    key: PRNG key ('random').
    filter_fn: `filter_fn(path, leaf) -> bool` choosing prunable leaves.
    allocation, min_kept_per_layer: see `masks_from_scores`.
    **options: method options, e.g. `num_steps`, `optimizer`, `remat` (ProsPr),
      `num_rounds` (iterative SNIP, FORCE, SynFlow), `float64` (SynFlow).

  Returns:
    A bool mask pytree with the structure of `params`.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown pruning method {method!r}; choose one of {sorted(METHODS)}.")
  spec = METHODS[method]
  inputs = PruneInputs(
      params, loss_fn, batches, state, apply_fn, input_shape, key, filter_fn
  )
  missing = [name for name in spec.needs if getattr(inputs, name) is None]
  if missing:
    raise ValueError(f"Method {method!r} needs {missing}; pass them to prune().")
  masks_lib.check_sparsity(sparsity)  # before any expensive scoring
  select = functools.partial(
      masks_lib.masks_from_scores, filter_fn=filter_fn, allocation=allocation,
      min_kept_per_layer=min_kept_per_layer,
  )
  return spec.fn(inputs, sparsity, select, **options)
