r"""The paper's settings on one accelerator, beside the authors' PyTorch ProsPr, in a time budget.

  python experiments/gpu_benchmark.py --output_dir=/tmp/gpu --repeats=3
  bash scripts/gpu_benchmark.sh     # the same with the time limits of the one-shot GPU run

First, before JAX touches the accelerator, the reference (scripts/reference_benchmark.py, run
with --torch_python, reading the authors' code from --reference_dir) on the same presets and
batch sizes: its published full mode, which moves to the CPU, for the one --published_cpu
setting; then per setting its masked training step, full ProsPr kept on the GPU for each k and
first-order ProsPr at the reference k. Then prospr_jax: `benchmark.run_benchmark` for every
preset and batch size, first without remat, then with (no memory table; each timed function's
compiled peak memory is reported). Every time is the median of --repeats runs after a warm-up.

Time guard: nothing starts after --budget_s seconds (the reference's jobs stop starting at
--reference_budget_s); after each step `benchmark_gpu.json` and `benchmark_gpu.txt` in
--output_dir are rewritten with everything so far, so a run killed at a hard time limit keeps
what it measured. Skipped and failed configurations are listed there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
from absl import app, flags, logging

import benchmark  # experiments/benchmark.py

_PRESETS = flags.DEFINE_list("presets", ["cifar10_resnet20", "cifar10_vgg16"],
                             f"Settings from {sorted(benchmark.PRESETS)}.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "256"], "Batch sizes.")
_BUDGET_S = flags.DEFINE_float("budget_s", 420.0, "Start nothing after this many seconds.")
_REFERENCE_BUDGET_S = flags.DEFINE_float(
    "reference_budget_s", 120.0, "Start no reference job after this many seconds."
)
_PUBLISHED_CPU = flags.DEFINE_string(
    "published_cpu", "cifar10_resnet20:128:3",
    "PRESET:BATCH:K of the one run of the reference's published full mode (on the CPU); "
    "empty for none.",
)
_REFERENCE_DIR = flags.DEFINE_string("reference_dir", "third_party_ref",
                                     "The authors' code (see scripts/reference_benchmark.py).")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", sys.executable,
                                    "Command that runs Python with torch for the reference.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where results go.", required=True)
# --ks and --repeats are benchmark.py's flags; its other flags do not apply here.
_NOT_HERE = ("preset", "model", "batch_size", "input_shape", "num_classes", "memory_ks", "remat",
             "smoke", "output")

REFERENCE_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts/reference_benchmark.py"
REFERENCE_HARD_LIMIT_S = 90.0
"""Seconds the reference may run past its budget (its last job) before it is killed."""


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """What `run_suite` measures, and its time budget."""

  settings: dict[str, dict[str, Any]]  # {name: model kwargs of benchmark.run_benchmark}
  batch_sizes: tuple[int, ...]
  ks: tuple[int, ...]
  repeats: int
  budget_s: float
  reference_jobs: tuple[dict[str, Any], ...]  # see `reference_plan`
  reference_dir: str
  torch_python: str
  reference_budget_s: float

  def summary(self) -> dict[str, Any]:
    """The JSON-serializable fields that describe the measurements."""
    return {"presets": list(self.settings), "batch_sizes": list(self.batch_sizes),
            "ks": sorted(set(self.ks)), "repeats": self.repeats, "budget_s": self.budget_s}


def published_cpu_setting(spec: str) -> tuple[str, int, int] | None:
  """`'PRESET:BATCH:K'` as `(preset, batch, k)`; None for ''."""
  if not spec:
    return None
  preset, batch, k = spec.split(":")
  return preset, int(batch), int(k)


def reference_plan(settings: dict[str, dict[str, Any]], batch_sizes: Sequence[int],
                   ks: Sequence[int], published_cpu: tuple[str, int, int] | None
                   ) -> list[dict[str, Any]]:
  """Jobs of scripts/reference_benchmark.py: the published full mode (CPU) for `published_cpu`,
  then per setting (`{name: model kwargs}`, in a job's 'preset' field) and batch size: the
  training step, full ProsPr kept on the GPU for each k, first-order at the reference k."""

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
                      k=benchmark.reference_k(ks), published=True))
  return jobs


def run_reference(config: SuiteConfig, output_dir: pathlib.Path) -> dict[str, Any]:
  """Runs scripts/reference_benchmark.py on `config.reference_jobs`:
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
    command = [*shlex.split(config.torch_python), str(REFERENCE_SCRIPT), f"--plan={plan.name}",
               f"--output={lines_path}", f"--ref_dir={config.reference_dir}",
               f"--repeats={config.repeats}", f"--budget_s={budget_s}"]
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
  """`run` (a `jax_plan` entry) with 'results' of `benchmark.run_benchmark`, or with 'error'
  if it raised."""
  try:
    results = benchmark.run_benchmark(
        **config.settings[run["preset"]], batch_size=run["batch_size"], repeats=config.repeats,
        ks=config.ks, memory_ks=(), remat=run["remat"])
  except Exception as e:  # pylint: disable=broad-except  # one failure must not end the run
    return {**run, "error": f"{type(e).__name__}: {e}"[:500]}
  return {**run, "results": results}


def _find(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
  """The first record whose items include `fields`."""
  return next((r for r in records if all(r.get(k) == v for k, v in fields.items())), None)


def _jax_ms(runs: list[dict[str, Any]], preset: str, batch_size: int, remat: bool,
            name: str) -> float | None:
  """prospr_jax's run time (ms) of timing case `name`, or None if not measured."""
  run = _find(runs, preset=preset, batch_size=batch_size, remat=remat)
  return run["results"]["times"].get(name, {}).get("run_ms") if run and "results" in run else None


def _ref_ms(jobs: list[dict[str, Any]], **fields: Any) -> float | None:
  """The reference's run time (ms) of the job with `fields`, or None if not measured."""
  job = _find(jobs, **fields)
  return job.get("run_ms") if job else None


def comparison_rows(suite: dict[str, Any]) -> list[dict[str, Any]]:
  """Side-by-side rows per preset, batch size and function: prospr_jax (without and with remat)
  and the reference on the accelerator, ms, with `ref / jax` (above 1: prospr_jax is faster)."""
  cfg, runs, jobs = suite["config"], suite["prospr_jax"], suite["reference"]["jobs"]
  k_ref = benchmark.reference_k(cfg["ks"])
  functions = [("train step (masked)", "train_step_masked", None, {"kind": "train_step"})]
  functions += [(f"full ProsPr k={k}", f"prospr_k{k}", f"prospr_k{k}_remat",
                 {"kind": "prospr", "method": "full", "k": k, "published": False})
                for k in cfg["ks"]]
  functions.append((f"first-order ProsPr k={k_ref}", f"prospr_first_order_k{k_ref}", None,
                    {"kind": "prospr", "method": "first_order", "k": k_ref}))
  rows = []
  for batch_size in cfg["batch_sizes"]:
    for preset in cfg["presets"]:
      for label, name, remat_name, ref_fields in functions:
        jax_ms = _jax_ms(runs, preset, batch_size, False, name)
        ref_ms = _ref_ms(jobs, preset=preset, batch_size=batch_size, **ref_fields)
        remat_ms = remat_name and _jax_ms(runs, preset, batch_size, True, remat_name)
        rows.append({"preset": preset, "batch_size": batch_size, "function": label,
                     "jax_ms": jax_ms, "jax_remat_ms": remat_ms, "reference_ms": ref_ms,
                     "ref_over_jax": ref_ms / jax_ms if ref_ms and jax_ms else None})
  return rows


def published_cpu_row(suite: dict[str, Any]) -> dict[str, Any] | None:
  """The reference's published full mode (CPU) against prospr_jax's full ProsPr (same setting,
  on the accelerator): `{'preset', 'batch_size', 'k', 'reference_ms', 'jax_ms', 'ref_over_jax'}`."""
  job = _find(suite["reference"]["jobs"], kind="prospr", method="full", published=True)
  if job is None:
    return None
  jax_ms = _jax_ms(suite["prospr_jax"], job["preset"], job["batch_size"], False,
                   f"prospr_k{job['k']}")
  ref_ms = job.get("run_ms")
  return {"preset": job["preset"], "batch_size": job["batch_size"], "k": job["k"],
          "reference_ms": ref_ms, "jax_ms": jax_ms,
          "ref_over_jax": ref_ms / jax_ms if ref_ms and jax_ms else None}


def _describe(job: dict[str, Any]) -> str:
  """A reference job in one line."""
  keys = ("preset", "batch_size", "kind", "method", "k", "published")
  return " ".join(f"{k}={job[k]}" for k in keys if k in job)


def _cell(value: float | None, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def format_summary(suite: dict[str, Any]) -> str:
  """The side-by-side table, the published-CPU comparison, what was skipped or failed, and each
  prospr_jax configuration's `benchmark.format_report`."""
  env = suite["reference"]["environment"] or {}
  lines = [f"prospr_jax: jax {suite['jax_version']} on {suite['device']['device_kind']} "
           f"({suite['device']['platform']}); reference: torch {env.get('torch', '-')} on "
           f"{env.get('gpu') or 'cpu'}; median of {suite['config']['repeats']} after a warm-up; "
           f"{suite['elapsed_s']:.0f} s of a {suite['config']['budget_s']:.0f} s budget",
           "ref ms: the authors' code there, full mode kept there (not moved to the CPU), "
           "first-order as published; ref/jax > 1: prospr_jax is faster",
           "", f"{'setting':<22}{'batch':>6}  {'function':<24}{'jax ms':>11}{'jax remat ms':>14}"
           f"{'ref ms':>12}{'ref/jax':>9}"]
  lines += [f"{r['preset']:<22}{r['batch_size']:>6}  {r['function']:<24}"
            f"{_cell(r['jax_ms'], '.2f'):>11}{_cell(r['jax_remat_ms'], '.2f'):>14}"
            f"{_cell(r['reference_ms'], '.2f'):>12}{_cell(r['ref_over_jax'], '.2f'):>9}"
            for r in comparison_rows(suite)]
  published = published_cpu_row(suite)
  if published:
    lines += ["", f"reference's published full mode (moves to the CPU), {published['preset']} "
              f"batch {published['batch_size']} k={published['k']}: "
              f"{_cell(published['reference_ms'], '.1f')} ms = "
              f"{_cell(published['ref_over_jax'], '.1f')} x prospr_jax's full ProsPr "
              f"({_cell(published['jax_ms'], '.2f')} ms)"]
  problems = [f"reference: {suite['reference']['error']}"] if suite["reference"]["error"] else []
  problems += [f"reference {_describe(j)}: {j.get('error') or 'skipped (budget)'}"
               for j in suite["reference"]["jobs"] if "run_ms" not in j]
  problems += [f"prospr_jax {r['preset']} batch {r['batch_size']} remat={r['remat']}: "
               f"{r.get('error') or 'skipped (budget)'}"
               for r in suite["prospr_jax"] if "results" not in r]
  lines += ["", *problems] if problems else []
  for run in suite["prospr_jax"]:
    if "results" in run:
      lines += ["", f"=== {run['preset']}, remat={run['remat']} ===",
                benchmark.format_report(run["results"])]
  return "\n".join(lines)


def write_outputs(suite: dict[str, Any], output_dir: pathlib.Path) -> None:
  """(Re)writes `benchmark_gpu.json` and `benchmark_gpu.txt` in `output_dir`."""
  (output_dir / "benchmark_gpu.json").write_text(json.dumps(suite, indent=2))
  (output_dir / "benchmark_gpu.txt").write_text(format_summary(suite) + "\n")


def run_suite(config: SuiteConfig, output_dir: pathlib.Path) -> dict[str, Any]:
  """Runs the reference, then each `jax_plan` configuration while the budget lasts; rewrites
  the outputs after each step and returns the suite's results."""
  start = time.perf_counter()
  output_dir.mkdir(parents=True, exist_ok=True)
  suite = {"config": config.summary(), "jax_version": jax.__version__,
           "reference": run_reference(config, output_dir), "prospr_jax": []}
  suite["device"] = benchmark.device_info()  # JAX takes the accelerator only now
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


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  given = [name for name in _NOT_HERE if flags.FLAGS[name].present]
  if given:
    raise app.UsageError(f"--{', --'.join(given)} do not apply here; see --helpfull.")
  unknown = set(_PRESETS.value) - set(benchmark.PRESETS)
  if unknown:
    raise app.UsageError(f"Unknown presets {sorted(unknown)}; choose from "
                         f"{sorted(benchmark.PRESETS)}.")
  published_cpu = published_cpu_setting(_PUBLISHED_CPU.value)
  if published_cpu and published_cpu[0] not in _PRESETS.value:
    raise app.UsageError("--published_cpu must name one of --presets.")
  settings = {p: benchmark.PRESETS[p] for p in _PRESETS.value}
  batch_sizes = tuple(int(b) for b in _BATCH_SIZES.value)
  ks = tuple(int(k) for k in flags.FLAGS.ks)
  config = SuiteConfig(
      settings=settings, batch_sizes=batch_sizes, ks=ks, repeats=flags.FLAGS.repeats,
      budget_s=_BUDGET_S.value,
      reference_jobs=tuple(reference_plan(settings, batch_sizes, ks, published_cpu)),
      reference_dir=_REFERENCE_DIR.value, torch_python=_TORCH_PYTHON.value,
      reference_budget_s=_REFERENCE_BUDGET_S.value)
  suite = run_suite(config, pathlib.Path(_OUTPUT_DIR.value))
  print(format_summary(suite))
  print(f"\nwrote {os.path.join(_OUTPUT_DIR.value, 'benchmark_gpu')}.json and .txt")


if __name__ == "__main__":
  app.run(main)
