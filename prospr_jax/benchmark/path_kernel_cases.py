"""One round of NTK-SAP and one of PX, jitted with their arguments, for the cost benchmark.

Both methods iterate (NTK-SAP 20 rounds, PX 100 by their authors' scripts); a round's cost times
the number of rounds is their cost to a mask, beside full ProsPr's one meta-gradient. A round
is timed without the host-side top-k selection that follows it (`masks_from_scores`, numpy).
NTK-SAP's round scores `num_samples` draws of its noise batch at the method's defaults; PX's
scores one data batch of the benchmark's batch size.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax

from prospr_jax import masks as masks_lib
from prospr_jax.adapters import LinenApply
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.pure_models import LinenEvalApply
from prospr_jax.saliency import ntk_sap, px
from prospr_jax.saliency.batch_statistics import batch_statistics_for


def method_default(method: Callable[..., Any], option: str) -> Any:
  """The default of keyword `option` of `method` (its signature is the one place it is set)."""
  return inspect.signature(method).parameters[option].default


def ntk_sap_round(setup: Setup) -> tuple[Callable[..., Any], tuple]:
  """Jitted `(draws, masks, state) -> ntk_sap_scores` at NTK-SAP's default ε, and its
  arguments: one round's draws (`num_samples` re-draws, each of `batch_size` noise inputs)."""
  apply = LinenEvalApply(setup.model)
  default = functools.partial(method_default, ntk_sap.ntk_sap_masks)
  draws = ntk_sap.draw_round(
      jax.random.PRNGKey(0), setup.params, init_fn=ntk_sap.kaiming_normal_redraw(setup.params),
      input_shape=setup.batches[0]["image"].shape[1:], batch_size=default("batch_size"),
      num_draws=default("num_samples") * default("num_batches"))
  fn = jax.jit(functools.partial(
      ntk_sap.ntk_sap_scores, epsilon=default("epsilon"), apply_fn=apply,
      calibrate_fn=batch_statistics_for(apply) if setup.state else None))
  return fn, (draws, masks_lib.ones_masks(setup.params, dtype=bool), setup.state)


def px_round(setup: Setup) -> tuple[Callable[..., Any], tuple]:
  """Jitted `(params, masks, unchanged, x) -> ∂R/∂q` of PX on one batch (activations recorded
  in eval mode, the linear copies in train mode, as its authors), and its arguments."""
  record = LinenApply(setup.model, setup.state, bn_mode="eval")
  copies = LinenApply(setup.model, setup.state, bn_mode="train")
  x = setup.batches[0]["image"]
  unchanged = px.authors_unchanged(record, setup.params, x)
  fn = jax.jit(functools.partial(px.path_kernel_gradient, apply_fn=record, copy_apply_fn=copies))
  return fn, (setup.params, masks_lib.ones_masks(setup.params, dtype=bool), unchanged, x)


def rounds_to_mask() -> dict[str, int]:
  """`{case name: rounds to a mask}` at each method's default number of rounds."""
  return {"ntk_sap_round": method_default(ntk_sap.ntk_sap_masks, "num_rounds"),
          "px_round": method_default(px.px_masks, "num_rounds")}


def timing_cases(setup: Setup) -> dict[str, tuple[Callable[..., Any], tuple]]:
  """`{'ntk_sap_round': (fn, args), 'px_round': (fn, args)}`."""
  return {"ntk_sap_round": ntk_sap_round(setup), "px_round": px_round(setup)}
