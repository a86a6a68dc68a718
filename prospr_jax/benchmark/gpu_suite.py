"""The paper's settings on one accelerator, beside the authors' PyTorch ProsPr, in a time budget.

First, before JAX touches the accelerator, the reference (experiments/reference_benchmark.py,
run with the torch Python, reading the authors' code from the reference folder) on the same
presets and batch sizes: its published full mode, which moves to the CPU, for one setting; then
per setting its masked training step, full ProsPr kept on the GPU for each k and first-order
ProsPr at the reference k. Then prospr_jax: `cost_suite.run_benchmark` for every preset and
batch size, first without remat, then with (no memory table; each timed function's compiled
peak memory is reported). Every time is the median of `repeats` runs after a warm-up.

Time guard: nothing starts after `budget_s` seconds (the reference's jobs stop starting at
`reference_budget_s`); after each step `benchmark_gpu.json` and `benchmark_gpu.txt` in the
output folder are rewritten with everything so far, so a run killed at a hard time limit keeps
what it measured. Skipped and failed configurations are listed there.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from absl import logging

from prospr_jax.benchmark import cost_suite, gpu_report, result_record
from prospr_jax.benchmark.cost_cases import reference_k

REFERENCE_HARD_LIMIT_S = 90.0
"""Seconds the reference may run past its budget (its last job) before it is killed."""


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """What `run_suite` measures, and its time budget."""

  settings: dict[str, dict[str, Any]]  # {name: model kwargs of cost_suite.run_benchmark}
  batch_sizes: tuple[int, ...]
  ks: tuple[int, ...]
  repeats: int
  budget_s: float
  reference_jobs: tuple[dict[str, Any], ...]  # see `reference_plan`
  reference_script: str  # experiments/reference_benchmark.py, or a stand-in
  reference_dir: str  # the authors' code
  torch_python: str  # command that runs Python with torch
  reference_budget_s: float

  def summary(self) -> dict[str, Any]:
    """The JSON-serializable fields that describe the measurements."""
    return {"presets": list(self.settings), "batch_sizes": list(self.batch_sizes),
            "ks": sorted(set(self.ks)), "repeats": self.repeats, "budget_s": self.budget_s}


def published_cpu_setting(spec: str) -> tuple[str, int, int] | None:
  """`'PRESET:BATCH:K'` as `(preset, batch, k)`; None for ''."""
  if not spec:
    return None
  parts = spec.split(":")
  if len(parts) != 3:
    raise ValueError(f"Expected PRESET:BATCH:K, got {spec!r}.")
  preset, batch, k = parts
  return preset, int(batch), int(k)


def reference_plan(settings: dict[str, dict[str, Any]], batch_sizes: Sequence[int],
                   ks: Sequence[int], published_cpu: tuple[str, int, int] | None
                   ) -> list[dict[str, Any]]:
  """Jobs of experiments/reference_benchmark.py: the published full mode (CPU) for
  `published_cpu`, then per setting (`{name: model kwargs}`, in a job's 'preset' field) and
  batch size: the training step, full ProsPr kept on the GPU for each k, first-order at the
  reference k."""

  def job(preset: str, batch_size: int, kind: str, **fields: Any) -> dict[str, Any]:
    model = settings[preset]
    return {"preset": preset, "model": model["model_name"], "num_classes": model["num_classes"],
            "input_shape": list(model["input_shape"]), "batch_size": batch_size, "kind": kind,
            **fields}

  jobs = []
  if published_cpu:
    preset, batch_size, k = published_cpu
    jobs.append(job(preset, batch_size, "prospr", method="full", k=k, published=True))
  for batch_size in batch_sizes:
    for preset in settings:
      jobs.append(job(preset, batch_size, "train_step"))
      jobs += [job(preset, batch_size, "prospr", method="full", k=k, published=False)
               for k in ks]
      jobs.append(job(preset, batch_size, "prospr", method="first_order",
                      k=reference_k(ks), published=True))
  return jobs


def run_reference(config: SuiteConfig, output_dir: pathlib.Path) -> dict[str, Any]:
  """Runs `config.reference_script` on `config.reference_jobs`:
  `{'environment', 'jobs', 'error'}`.

  Its raw JSON lines go to `output_dir/reference.jsonl`, its output to `reference.log`.
  """
  if not pathlib.Path(config.reference_dir, "prospr", "prospr.py").is_file():
    return {"environment": None, "jobs": [],
            "error": f"not run: {config.reference_dir}/ lacks the authors' code"}
  lines_path, log_path = output_dir / "reference.jsonl", output_dir / "reference.log"
  lines_path.unlink(missing_ok=True)
  budget_s = min(config.reference_budget_s, config.budget_s)
  with tempfile.NamedTemporaryFile("w", suffix=".json") as plan, open(log_path, "w") as log:
    json.dump(config.reference_jobs, plan)
    plan.flush()
    command = [*shlex.split(config.torch_python), config.reference_script,
               f"--plan={plan.name}", f"--output={lines_path}",
               f"--ref_dir={config.reference_dir}", f"--repeats={config.repeats}",
               f"--budget_s={budget_s}"]
    try:
      code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                            timeout=budget_s + REFERENCE_HARD_LIMIT_S).returncode
      error = None if code == 0 else f"exit status {code}, see reference.log"
    except subprocess.TimeoutExpired:
      error = "killed at its hard time limit; its finished jobs are kept"
  records = ([json.loads(line) for line in lines_path.read_text().splitlines()]
             if lines_path.exists() else [])
  environment = [r for r in records if r.get("kind") == "environment"]
  return {"environment": environment[0] if environment else None,
          "jobs": [r for r in records if r.get("kind") != "environment"], "error": error}


def jax_plan(presets: Sequence[str], batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
  """Configurations in the order they run: all without remat first, then all with it."""
  return [{"preset": preset, "batch_size": batch_size, "remat": remat}
          for remat in (False, True) for batch_size in batch_sizes for preset in presets]


def run_jax(run: dict[str, Any], config: SuiteConfig) -> dict[str, Any]:
  """`run` (a `jax_plan` entry) with 'results' of `cost_suite.run_benchmark`, or with 'error'
  if it raised."""
  try:
    results = cost_suite.run_benchmark(
        **config.settings[run["preset"]], batch_size=run["batch_size"], repeats=config.repeats,
        ks=config.ks, memory_ks=(), remat=run["remat"])
  except Exception as e:  # pylint: disable=broad-except  # one failure must not end the run
    return {**run, "error": f"{type(e).__name__}: {e}"[:500]}
  return {**run, "results": results}


def write_outputs(suite: dict[str, Any], output_dir: pathlib.Path) -> None:
  """(Re)writes `benchmark_gpu.json` and `benchmark_gpu.txt` in `output_dir`."""
  result_record.write_json(output_dir / "benchmark_gpu.json", suite)
  (output_dir / "benchmark_gpu.txt").write_text(gpu_report.format_summary(suite) + "\n")


def run_suite(config: SuiteConfig, output_dir: pathlib.Path) -> dict[str, Any]:
  """Runs the reference, then each `jax_plan` configuration while the budget lasts; rewrites
  the outputs after each step and returns the suite's 'gpu_side_by_side' `result_record`.

  Its measurements: 'reference' (`run_reference`), 'prospr_jax' (one `run_jax` entry per
  configuration, or the configuration with 'skipped': 'budget') and 'elapsed_s'.
  """
  start = time.perf_counter()
  output_dir.mkdir(parents=True, exist_ok=True)
  reference = run_reference(config, output_dir)
  # A new record looks at the device: JAX takes the accelerator only now, after the reference.
  suite = result_record.new_record("gpu_side_by_side", config.summary(), reference=reference,
                                   prospr_jax=[])
  suite["elapsed_s"] = time.perf_counter() - start
  write_outputs(suite, output_dir)
  for run in jax_plan(list(config.settings), config.batch_sizes):
    late = time.perf_counter() - start > config.budget_s
    suite["prospr_jax"].append({**run, "skipped": "budget"} if late else run_jax(run, config))
    suite["elapsed_s"] = time.perf_counter() - start
    write_outputs(suite, output_dir)
    logging.info("%.0f s: %s", suite["elapsed_s"],
                 {k: v for k, v in suite["prospr_jax"][-1].items() if k != "results"})
  return suite
