"""How far float32 ProsPr scores are from float64 ones, with each conv variant.

`precision_check` computes the scores of one setting (`cost_cases`' random batches, k = 3) in
float64 with `conv_ops` as the truth, then in float32 with each variant of `conv_variants`
(`lax`, `conv_wgrad`, `conv_ops`), and records for each the largest |float32 - float64| of a
leaf relative to that leaf's largest |float64| score.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from prospr_jax.benchmark import conv_variants, cost_cases, result_record
from prospr_jax.benchmark.synthetic_setup import Setup

K = 3
"""ProsPr's inner steps; a setup needs K + 1 batches."""


def scores(setup: Setup, variant: str, float64: bool, first_order: bool) -> list[np.ndarray]:
  """The ProsPr score leaves of `setup` with the conv `variant`, computed in float64 (call it
  under `jax.enable_x64`) or float32, as float64 arrays."""
  jax.clear_caches()  # the library's jits are module-level: never reuse another variant's trace
  conv_variants.use(variant)
  args = cost_cases.prospr_args(setup, K)
  if float64:
    args = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else a, args)
  fn = cost_cases.prospr_fn(setup, K, first_order=first_order)
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(fn(*args))]


def precision_check(setup: Setup, config: dict[str, Any], first_order: bool) -> dict[str, Any]:
  """A 'score_precision' `result_record` (`config` describes `setup`) whose 'errors' maps each
  conv variant to its float32 scores' largest relative difference from the float64 truth."""
  with jax.enable_x64(True):
    truth = scores(setup, "conv_ops", float64=True, first_order=first_order)
  errors = {variant: conv_variants.largest_relative_difference(
                truth, scores(setup, variant, float64=False, first_order=first_order))
            for variant in conv_variants.VARIANTS}
  return result_record.new_record(
      "score_precision", config | {"k": K, "first_order": first_order}, errors=errors)


def format_precision(record: dict[str, Any]) -> str:
  """One line per conv variant of a `precision_check` record."""
  cfg = record["config"]
  kind = "first-order" if cfg["first_order"] else "full"
  return "\n".join(
      f"{cfg['model']} {kind} ProsPr k={cfg['k']}, {variant}: float32 vs float64, largest "
      f"|difference| / largest |score| of a leaf = {error:.2e}"
      for variant, error in record["errors"].items())
