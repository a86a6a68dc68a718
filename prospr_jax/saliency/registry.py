"""Registry of pruning methods by name, and `prune`, the one entry point that returns masks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax

from prospr_jax import masks as masks_lib
from prospr_jax.analysis import sanity
from prospr_jax.saliency import grasp, prospr, simple, snip, synflow
from prospr_jax.saliency.objective import BatchNormMode
from prospr_jax.tree_types import PyTree


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
  """A registered pruning method: what it needs, its option names, whether it selects once
  from one score pytree (`one_shot`) or iterates, and the BatchNorm mode its authors' code
  scores in (`None` for the methods that run no model). (Channel pruning: see
  `prospr_jax.structured`.)"""

  fn: MethodFn
  needs: tuple[str, ...]
  options: tuple[str, ...]
  one_shot: bool
  batchnorm_mode: BatchNormMode | None


METHODS: dict[str, Method] = {}


def register(
    name: str,
    *,
    needs: tuple[str, ...],
    options: tuple[str, ...] = (),
    one_shot: bool = False,
    batchnorm_mode: BatchNormMode | None = None,
):
  """Decorator adding a method to `METHODS` under `name` (see `Method` for the fields);
  `options`: its keyword options."""

  def add(fn: MethodFn) -> MethodFn:
    METHODS[name] = Method(fn, needs, options, one_shot, batchnorm_mode)
    return fn

  return add


def _one_shot(score_fn: Callable[..., PyTree]) -> MethodFn:
  """Wraps `score_fn(inputs, **options) -> scores` into a method that selects the top scores."""

  def fn(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
    return select(score_fn(inputs, **options), sparsity)

  return fn


_DATA = ("loss_fn", "batches")
_PROSPR_OPTIONS = ("num_steps", "optimizer", "remat")


def _prospr(inputs: PruneInputs, *, first_order: bool, **options) -> PyTree:
  return prospr.prospr_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      first_order=first_order, **options,
  )


# BatchNorm modes of the authors' code while scoring (docs/methods.md): mil-ad/prospr calls
# `net.train()`; SNIP (namhoonlee/snip-public) feeds `is_train: False`; alecwangcq/GraSP scores a
# fresh model, in train mode; naver/force never leaves train mode; Synaptic-Flow's `prune_loop`
# calls `model.eval()` for SynFlow.
register("prospr", needs=_DATA, options=_PROSPR_OPTIONS, one_shot=True,
         batchnorm_mode="train")(
    _one_shot(functools.partial(_prospr, first_order=False))
)
register("prospr_first_order", needs=_DATA, options=_PROSPR_OPTIONS, one_shot=True,
         batchnorm_mode="train")(
    _one_shot(functools.partial(_prospr, first_order=True))
)


@register("snip", needs=_DATA, one_shot=True, batchnorm_mode="eval")
@_one_shot
def _snip(inputs: PruneInputs) -> PyTree:
  return snip.snip_scores(inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state)


@register("grasp", needs=_DATA, one_shot=True, batchnorm_mode="train")
@_one_shot
def _grasp(inputs: PruneInputs) -> PyTree:
  return grasp.grasp_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      filter_fn=inputs.filter_fn,
  )


@register("magnitude", needs=(), one_shot=True)
@_one_shot
def _magnitude(inputs: PruneInputs) -> PyTree:
  return simple.magnitude_scores(inputs.params)


@register("random", needs=("key",), one_shot=True)
@_one_shot
def _random(inputs: PruneInputs) -> PyTree:
  return simple.random_scores(inputs.params, inputs.key)


def _gradual(inputs: PruneInputs, sparsity: float, select, *, allow_regrowth: bool, **options):
  return snip.gradual_sensitivity_masks(
      inputs.loss_fn, inputs.params, inputs.batches, sparsity, select, state=inputs.state,
      allow_regrowth=allow_regrowth, **options,
  )


register("iterative_snip", needs=_DATA, options=("num_rounds",), batchnorm_mode="train")(
    functools.partial(_gradual, allow_regrowth=False)
)
register("force", needs=_DATA, options=("num_rounds",), batchnorm_mode="train")(
    functools.partial(_gradual, allow_regrowth=True)
)


@register("synflow", needs=("apply_fn", "input_shape"), options=("num_rounds", "float64"),
          batchnorm_mode="eval")
def _synflow(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
  return synflow.synflow_masks(
      inputs.apply_fn, inputs.params, inputs.input_shape, sparsity, select, **options
  )


def check_options(method: str, given: Iterable[str], accepted: Sequence[str]) -> None:
  """Raises ValueError naming the accepted options if `given` holds a name not in `accepted`."""
  unknown = sorted(set(given) - set(accepted))
  if unknown:
    takes = f"its options are {sorted(accepted)}" if accepted else "it takes no options"
    raise ValueError(f"Method {method!r} has no option(s) {unknown}: {takes}.")


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
    invert: bool = False,
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
    invert: the `invert` sanity check (Frankle et al. 2021): every prunable layer keeps its
      lowest-scored weights, as many as the method would keep there (one-shot methods only;
      see `prospr_jax.analysis.sanity.invert_selection`).
    **options: the method's options (`METHODS[method].options`): `num_steps`, `optimizer`,
      `remat` (ProsPr), `num_rounds` (iterative SNIP, FORCE, SynFlow), `float64` (SynFlow).

  Returns:
    A bool mask pytree with the structure of `params`.

  Raises:
    ValueError: unknown method or option, missing inputs, sparsity outside [0, 1).
    TypeError: non-numeric sparsity, params that are not floating point, `structured=`.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown pruning method {method!r}; choose one of {sorted(METHODS)}.")
  spec = METHODS[method]
  if "structured" in options:
    raise TypeError(
        "prune() has no structured mode: channel pruning, with the channels that must go "
        "together traced from the model, is prospr_jax.structured_prune(method, model, "
        "variables, batches, sparsity)."
    )
  check_options(method, options, spec.options)
  masks_lib.check_float_params(params)
  inputs = PruneInputs(params, loss_fn, batches, state, apply_fn, input_shape, key, filter_fn)
  missing = [name for name in spec.needs if getattr(inputs, name) is None]
  if missing:
    raise ValueError(f"Method {method!r} needs {missing}; pass them to prune().")
  if invert and not spec.one_shot:
    one_shot = sorted(n for n, m in METHODS.items() if m.one_shot)
    raise ValueError(
        f"invert=True needs a one-shot method (it inverts one score ranking); {method!r} "
        f"iterates. Use one of {one_shot}."
    )
  masks_lib.check_sparsity(sparsity)  # before any expensive scoring
  select = functools.partial(
      masks_lib.masks_from_scores, filter_fn=filter_fn, allocation=allocation,
      min_kept_per_layer=min_kept_per_layer,
  )
  if invert:
    chosen = select
    select = lambda scores, s: sanity.invert_selection(scores, chosen(scores, s), filter_fn)
  return spec.fn(inputs, sparsity, select, **options)
