"""prospr_jax's ProsPr cost beside the authors' PyTorch code (experiments/reference_benchmark.py's
JSON lines) on the same setting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from prospr_jax.benchmark.cost_cases import prospr_name


def read_reference(path: str) -> list[dict[str, Any]]:
  """The records of experiments/reference_benchmark.py's JSON-lines output (environment first)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def reference_comparison(
    results: dict[str, Any], records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
  """`results` (a `cost_suite.run_benchmark` record) beside the reference's timed jobs of the
  same setting (model name, batch size, input shape, classes): `{'environment', 'rows',
  'steps_per_full'}`.

  Each row is `{'function', 'key', 'reference_ms', 'jax_ms', 'jax_over_reference'}` for the
  training step, full ProsPr and first-order ProsPr at the reference k (`None` where a side
  was not measured); `steps_per_full` is full ProsPr / training step on each side.
  """
  cfg = results["config"]
  k = cfg["reference_k"]
  setting = {"model": cfg["model"], "batch_size": cfg["batch_size"],
             "input_shape": cfg["input_shape"], "num_classes": cfg["num_classes"]}

  def reference_ms(**fields: Any) -> float | None:
    wanted = setting | fields
    job = next((r for r in records if "run_ms" in r
                and all(r.get(name) == value for name, value in wanted.items())), None)
    return job["run_ms"] if job else None

  functions = [
      ("one training step", "train_step", "train_step_masked", {"kind": "train_step"}),
      (f"full ProsPr k={k}", "full", prospr_name(k, cfg["remat"]),
       {"kind": "prospr", "method": "full", "k": k}),
      (f"first-order ProsPr k={k}", "first_order", f"prospr_first_order_k{k}",
       {"kind": "prospr", "method": "first_order", "k": k}),
  ]
  rows = []
  for label, key, name, fields in functions:
    ref, ours = reference_ms(**fields), results["times"][name]["run_ms"]
    rows.append({"function": label, "key": key, "reference_ms": ref, "jax_ms": ours,
                 "jax_over_reference": ours / ref if ref else None})
  step, full = rows[0], rows[1]
  steps_per_full = {
      "reference": full["reference_ms"] / step["reference_ms"]
      if full["reference_ms"] and step["reference_ms"] else None,
      "jax": full["jax_ms"] / step["jax_ms"]}
  environment = next((r for r in records if r.get("kind") == "environment"), None)
  return {"environment": environment, "rows": rows, "steps_per_full": steps_per_full}
