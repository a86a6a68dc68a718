"""The cost of ProsPr relative to training, measured side by side in one process.

`run_benchmark` compiles and times (see `timing`) the masked training step, the same step
without `keep_masked` (dense), full ProsPr for each k (with or without remat), and first-order
ProsPr and SNIP at the reference k (`cost_cases.timing_cases`), and one round of NTK-SAP and of
PX (`path_kernel_cases`), and reports run-time ratios (NTK-SAP and PX per round and over their
default number of rounds, against full ProsPr at the reference k);
it also tabulates the compiled memory of the ProsPr meta-gradient with and without remat per
k, and checks the targets below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from prospr_jax.benchmark import cost_cases, path_kernel_cases, result_record, timing
from prospr_jax.benchmark.cost_cases import prospr_name, reference_k
from prospr_jax.benchmark.reference_comparison import reference_comparison
from prospr_jax.benchmark.synthetic_setup import Setup, make_setup

SMOKE_SETTINGS = {"model_name": "lenet300100", "batch_size": 8, "repeats": 1, "ks": (1,),
                  "memory_ks": (1, 3)}
"""`run_benchmark` keyword arguments of a tiny, fast run (experiments/benchmark.py --smoke)."""

MASKED_OVER_DENSE_MAX = 1.05
"""`keep_masked` should cost the training step at most 5%."""
PROSPR_K3_OVER_STEP_MAX = 10.0
"""Full ProsPr at k = 3 should cost at most 10 training steps, the reference's own ratio."""
REMAT_MEMORY_RATIO_MAX = 1.5
"""With remat, the meta-gradient's peak memory at the largest k should stay within 1.5x of
the smallest k's."""
OVER_REFERENCE_MAX = {"train_step": 1.5, "full": 2.0, "first_order": 1.5}
"""The most prospr_jax / reference wall time of the training step, full ProsPr and first-order
ProsPr (set for ResNet-20; checked for every setting with a reference)."""


def measure_times(
    setup: Setup, ks: Sequence[int], repeats: int, remat: bool = False
) -> dict[str, dict[str, float]]:
  """`{name: {'compile_ms', 'run_ms', 'peak_mib'}}` for every `cost_cases.timing_cases` entry
  (see `timing`; 'peak_mib' is the compiled function's `timing.memory_stats` peak)."""
  cases = cost_cases.timing_cases(setup, ks, remat) | path_kernel_cases.timing_cases(setup)
  calls = {name: timing.compile_call(jitted, *args) for name, (jitted, args) in cases.items()}
  run_ms = timing.interleaved_median_ms(calls, repeats)
  return {name: {"compile_ms": 1e3 * call.compile_s, "run_ms": run_ms[name],
                 "peak_mib": timing.memory_stats(call.executable)["peak"] / timing.BYTES_PER_MIB}
          for name, call in calls.items()}


def measure_memory(setup: Setup, memory_ks: Sequence[int]) -> dict[str, dict[str, dict]]:
  """`{'remat'|'no_remat': {str(k): memory stats + 'ratio' to the smallest k}}` (compile only);
  `{}` for no `memory_ks`."""
  if not memory_ks:
    return {}
  out = {}
  for remat in (False, True):
    table = {str(k): timing.memory_stats(
        cost_cases.compile_prospr(setup, k, remat=remat).executable) for k in memory_ks}
    base = table[str(min(memory_ks))]
    for stats in table.values():
      stats["ratio"] = stats["peak"] / base["peak"]
    out["remat" if remat else "no_remat"] = table
  return out


def ratios(
    times: dict[str, dict[str, float]], ks: Sequence[int], remat: bool = False
) -> dict[str, float]:
  """Run-time ratios: ProsPr / masked step per k; first-order, SNIP, and NTK-SAP and PX per
  round and over their default rounds, / ProsPr at the reference k; masked / dense."""
  run = {name: t["run_ms"] for name, t in times.items()}
  k_ref = reference_k(ks)
  reference = prospr_name(k_ref, remat)
  out = {f"{prospr_name(k, remat)} / train_step_masked":
         run[prospr_name(k, remat)] / run["train_step_masked"] for k in ks}
  for name in (f"prospr_first_order_k{k_ref}", "snip"):
    out[f"{name} / {reference}"] = run[name] / run[reference]
  for name, rounds in path_kernel_cases.rounds_to_mask().items():
    out[f"{name} / {reference}"] = run[name] / run[reference]
    out[f"{name} x {rounds} / {reference}"] = rounds * run[name] / run[reference]
  out["train_step_masked / train_step_dense"] = run["train_step_masked"] / run["train_step_dense"]
  return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The targets as `{'name', 'value', 'limit', 'met'}` (value <= limit is met); the memory
  target only with a memory table, the prospr_jax / reference ones only with a reference."""
  cfg = results["config"]
  k_ref = cfg["reference_k"]
  checks = [
      (f"full ProsPr k={k_ref} / masked train step",
       results["ratios"][f"{prospr_name(k_ref, cfg['remat'])} / train_step_masked"],
       PROSPR_K3_OVER_STEP_MAX),
      ("masked / dense train step", results["ratios"]["train_step_masked / train_step_dense"],
       MASKED_OVER_DENSE_MAX),
  ]
  if results["memory"]:
    memory = results["memory"]["remat"]
    k_max, k_min = max(memory, key=int), min(memory, key=int)
    checks.append((f"remat peak memory k={k_max} / k={k_min}", memory[k_max]["ratio"],
                   REMAT_MEMORY_RATIO_MAX))
  for row in (results.get("reference") or {}).get("rows", []):
    if row["jax_over_reference"] is not None:
      checks.append((f"{row['function']}: prospr_jax / reference", row["jax_over_reference"],
                     OVER_REFERENCE_MAX[row["key"]]))
  return [{"name": n, "value": v, "limit": lim, "met": bool(v <= lim)} for n, v, lim in checks]


def run_benchmark(
    model_name: str = "small_convnet",
    batch_size: int = 128,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    repeats: int = 5,
    ks: Sequence[int] = (1, 3, 10),
    memory_ks: Sequence[int] = (1, 3, 10, 30),
    remat: bool = False,
    reference: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Runs every measurement; returns a 'prospr_cost' `result_record`.

  Its measurements: 'times' (`{name: {'compile_ms', 'run_ms', 'peak_mib'}}`), 'ratios'
  (`{'a / b': float}`), 'memory' (see `measure_memory`), 'reference' (`reference_comparison`
  with the `reference` records, None without) and 'targets'. `remat` times full ProsPr with
  `remat=True`.
  """
  if repeats < 1 or not ks:
    raise ValueError("Need repeats >= 1 and non-empty ks.")
  ks, memory_ks = sorted(set(ks)), sorted(set(memory_ks))
  setup = make_setup(model_name, batch_size, input_shape, num_classes,
                     num_batches=max(ks + memory_ks) + 1)
  times = measure_times(setup, ks, repeats, remat)
  config = {"model": model_name, "batch_size": batch_size, "input_shape": list(input_shape),
            "num_classes": num_classes, "repeats": repeats, "ks": ks, "memory_ks": memory_ks,
            "remat": remat, "reference_k": reference_k(ks),
            "masked_sparsity": cost_cases.SPARSITY,
            "num_params": sum(int(p.size) for p in jax.tree.leaves(setup.params))}
  results = result_record.new_record(
      "prospr_cost", config, times=times, ratios=ratios(times, ks, remat),
      memory=measure_memory(setup, memory_ks))
  results["reference"] = reference_comparison(results, reference) if reference else None
  results["targets"] = targets(results)
  return results
