"""The built-in pruning methods, each declared once (see `registry.MethodSpec`).

Declaration order is the order of sweeps and report tables. BatchNorm modes are those of the
authors' code while scoring (docs/methods.md): mil-ad/prospr calls `net.train()`; SNIP
(namhoonlee/snip-public) feeds `is_train: False`; alecwangcq/GraSP scores a fresh model, in
train mode, with the logits divided by a temperature (200); naver/force never leaves train
mode; Synaptic-Flow's `prune_loop` calls `model.eval()` for SynFlow; NTK-SAP scores in eval mode
on statistics calibrated from each noise batch; PX records activations in eval mode and runs
its two linear copies in train mode (the declared mode is the copies').
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import optax

from prospr_jax.adapters import LinenApply
from prospr_jax.saliency import grasp, ntk_sap, prospr, px, simple, snip, synflow
from prospr_jax.saliency.batch_statistics import CalibrateFn, batch_statistics_for
from prospr_jax.saliency.registry import (
    ChannelScorer,
    MethodFn,
    MethodSpec,
    PruneInputs,
    from_config,
    register,
)
from prospr_jax.structured import scoring
from prospr_jax.pure_models import FunctionApply, LinenEvalApply
from prospr_jax.tree_types import PyTree


def _one_shot(score_fn: Callable[..., PyTree]) -> MethodFn:
  """Wraps `score_fn(inputs, **options) -> scores` into a method that selects the top scores."""

  def fn(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
    return select(score_fn(inputs, **options), sparsity)

  return fn


@functools.lru_cache(maxsize=None)
def _inner_sgd(learning_rate: float, momentum: float) -> optax.GradientTransformation:
  """ProsPr's inner optimizer: SGD, with momentum unless it is 0. One object per setting, so
  that the compiled meta-gradient (which has the optimizer as a static argument, compared by
  identity) is reused by every run with the same setting."""
  return optax.sgd(learning_rate, momentum=momentum or None)


_DATA = ("loss_fn", "batches")
_PROSPR_OPTIONS = {
    "num_steps": from_config("num_steps"),
    "optimizer": from_config("inner_lr", "inner_momentum", build=_inner_sgd),
    "remat": from_config("remat"),
    "unroll": from_config("unroll"),
}
_GRADUAL_OPTIONS = {"num_rounds": from_config("num_rounds")}
# ProsPr takes one batch per inner step and one for the meta-loss.
_PROSPR_BATCHES = from_config("num_steps", build=lambda num_steps: num_steps + 1)


def _prospr(inputs: PruneInputs, *, first_order: bool, **options) -> PyTree:
  return prospr.prospr_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      first_order=first_order, **options,
  )


def _snip(inputs: PruneInputs) -> PyTree:
  return snip.snip_scores(inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state)


def _grasp(inputs: PruneInputs) -> PyTree:
  return grasp.grasp_scores(
      inputs.loss_fn, inputs.params, inputs.batches, state=inputs.state,
      filter_fn=inputs.filter_fn,
  )


def _synflow(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
  return synflow.synflow_masks(
      inputs.apply_fn, inputs.params, inputs.input_shape, sparsity, select, **options
  )


def _gradual(inputs: PruneInputs, sparsity: float, select, *, allow_regrowth: bool, **options):
  return snip.gradual_sensitivity_masks(
      inputs.loss_fn, inputs.params, inputs.batches, sparsity, select, state=inputs.state,
      allow_regrowth=allow_regrowth, **options,
  )


def _calibrated_eval_apply(
    apply_fn: Callable[..., Any],
) -> tuple[ntk_sap.StatefulApplyFn, PyTree, CalibrateFn | None]:
  """NTK-SAP's view of `prune`'s `apply_fn(params, x)`: an eval-mode `apply(params, state, x)`,
  the state, and the BatchNorm calibration (None without BatchNorm state)."""
  if not isinstance(apply_fn, LinenApply):
    return FunctionApply(apply_fn), {}, None
  if apply_fn.bn_mode != "eval":
    raise ValueError(
        "NTK-SAP scores with BatchNorm in eval mode on statistics calibrated from each noise "
        f"batch (its authors' code); got an apply_fn in bn_mode={apply_fn.bn_mode!r}.")
  apply = LinenEvalApply(apply_fn.model)
  return apply, apply_fn.state, batch_statistics_for(apply) if apply_fn.state else None


def _ntk_sap(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
  apply, state, calibrate = _calibrated_eval_apply(inputs.apply_fn)
  return ntk_sap.ntk_sap_masks(
      apply, inputs.params, inputs.input_shape, sparsity, select, key=inputs.key, state=state,
      calibrate_fn=calibrate, filter_fn=inputs.filter_fn, **options,
  )


def _px(inputs: PruneInputs, sparsity: float, select, **options) -> PyTree:
  """PX records activations in eval mode; its linear copies run in `apply_fn`'s mode."""
  record = inputs.apply_fn
  if isinstance(record, LinenApply):
    record = LinenApply(record.model, record.state, bn_mode="eval")
  return px.px_masks(
      record, inputs.params, inputs.batches, sparsity, select, copy_apply_fn=inputs.apply_fn,
      filter_fn=inputs.filter_fn, **options,
  )


def _magnitude(inputs: PruneInputs) -> PyTree:
  return simple.magnitude_scores(inputs.params)


def _random(inputs: PruneInputs) -> PyTree:
  return simple.random_scores(inputs.params, inputs.key)


def _prospr_method(name: str, *, first_order: bool) -> MethodSpec:
  """Full ProsPr (the report's reference, in the default sweep) or its first-order variant."""
  return MethodSpec(
      name, _one_shot(functools.partial(_prospr, first_order=first_order)), needs=_DATA,
      options=_PROSPR_OPTIONS, one_shot=True, batchnorm_mode="train",
      num_batches=_PROSPR_BATCHES,
      channel_scorer=ChannelScorer(
          functools.partial(scoring.prospr_channel_scores, first_order=first_order),
          needs=("batches",)),
      in_default_sweep=not first_order, report_reference=not first_order,
  )


register(_prospr_method("prospr", first_order=False))
register(_prospr_method("prospr_first_order", first_order=True))
register(MethodSpec(
    "snip", _one_shot(_snip), needs=_DATA, one_shot=True, batchnorm_mode="eval",
    channel_scorer=ChannelScorer(scoring.snip_channel_scores, needs=("batches",)),
))
register(MethodSpec(
    "grasp", _one_shot(_grasp), needs=_DATA, one_shot=True, batchnorm_mode="train",
    loss_options={"temperature": from_config("grasp_temperature")},
))
register(MethodSpec(
    "synflow", _synflow, needs=("apply_fn", "input_shape"),
    options={"num_rounds": from_config("synflow_rounds"),
             "float64": from_config("synflow_float64")},
    batchnorm_mode="eval",
))
register(MethodSpec(
    "iterative_snip", functools.partial(_gradual, allow_regrowth=False), needs=_DATA,
    options=_GRADUAL_OPTIONS, batchnorm_mode="train",
))
register(MethodSpec(
    "force", functools.partial(_gradual, allow_regrowth=True), needs=_DATA,
    options=_GRADUAL_OPTIONS, batchnorm_mode="train",
))
register(MethodSpec(
    "magnitude", _one_shot(_magnitude), one_shot=True,
    channel_scorer=ChannelScorer(scoring.magnitude_channel_scores),
))
register(MethodSpec(
    "random", _one_shot(_random), needs=("key",), one_shot=True,
    channel_scorer=ChannelScorer(scoring.random_channel_scores, needs=("key",)),
))
register(MethodSpec(
    "ntk_sap", _ntk_sap, needs=("apply_fn", "input_shape", "key"),
    options={"num_rounds": from_config("ntk_sap_rounds"),
             "num_samples": from_config("ntk_sap_samples"),
             "epsilon": from_config("ntk_sap_epsilon"),
             "batch_size": None, "num_batches": None, "init_fn": None, "float64": None},
    batchnorm_mode="eval",
))
register(MethodSpec(
    "px", _px, needs=("apply_fn", "batches"),
    options={"num_rounds": from_config("px_rounds"), "unchanged_fn": None, "float64": None},
    batchnorm_mode="train",
))
