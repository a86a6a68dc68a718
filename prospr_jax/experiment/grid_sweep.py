"""A resumable grid sweep over pruning methods, sparsities and seeds, and its results collection.

Each grid point trains in its own directory under a root:
`<root>/<arm>/s<sparsity>/seed<seed>` (`<root>/dense/seed<seed>` for the unpruned network).
An arm is a method name, optionally with modifiers joined by '+' (see `ARM_MODIFIERS`):
`random+erk` is random pruning with ERK layer densities, `prospr+shuffle` ProsPr's masks
shuffled within each layer, `dense+x2` the dense network trained twice as long.
A point whose `results.json` already exists (and parses) is skipped, so an interrupted sweep
resumes where it stopped. After each new run, every `results.json` under the root is collected
into `<root>/all_results.json` (one record per run, with per-layer densities) and
`<root>/all_results.csv` (the same records without the per-layer densities).

Populations (`run_sweep(..., population_size=P)`): the points whose configs differ only in
`run_grouping.MEMBER_FIELDS` (pruning method, sparsity, allocation, sanity check, seed) are
trained in groups of at most P by one program (`prospr_jax.experiment.population_sweep`);
each member writes its own `results.json` as a single run does. Points that differ in anything
else (model, batch size, epochs, optimizer, ...) are never grouped together.

`experiments/sweep.py` is the command-line front end; `prospr_jax.experiment.study_report`
turns the collection into a table and plots.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
from absl import logging

from prospr_jax.experiment import atomic_files, config_checks, run_grouping

DENSE = "dense"
"""Method name of the unpruned baseline (same as `prospr_jax.experiment.train.DENSE`)."""
DEFAULT_SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.995)
DEFAULT_SEEDS = (0, 1, 2)
RESULTS_FILE = "results.json"
COLLECTION_JSON = "all_results.json"
COLLECTION_CSV = "all_results.csv"
CSV_FIELDS = (
    "method", "prune_method", "sparsity", "seed", "final_test_top1", "best_test_top1",
    "density_total", "effective_density_total", "inactive_fraction", "num_empty_layers",
    "num_disconnected_layers", "prune_seconds", "train_seconds", "git_commit", "git_dirty",
    "workdir",
)
"""Columns of `all_results.csv`; `all_results.json` records also hold `layer_density`."""

ARM_MODIFIERS: dict[str, tuple[str, Any]] = {
    "erk": ("prune.allocation", "erk"),
    "uniform": ("prune.allocation", "uniform"),
    "shuffle": ("prune.sanity_check", "shuffle"),
    "reinit": ("prune.sanity_check", "reinit"),
    "invert": ("prune.sanity_check", "invert"),
    "x2": ("train.num_epochs", 2),
}
"""Arm modifier -> (dotted config field, value); `x2` multiplies the field by its value."""
TRAINING_LENGTH_MODIFIERS = ("x2",)
"""Modifiers that multiply the training length: such an arm checks its base arm's convergence."""

def parse_arm(arm: str) -> tuple[str, list[str]]:
  """`'prospr+shuffle'` -> `('prospr', ['shuffle'])`.

  Raises:
    ValueError: on an unknown modifier.
  """
  method, *modifiers = arm.split("+")
  unknown = [m for m in modifiers if m not in ARM_MODIFIERS]
  if not method or unknown:
    raise ValueError(f"Bad sweep arm {arm!r}: an arm is a method name and optional '+'-joined "
                     f"modifiers from {sorted(ARM_MODIFIERS)}.")
  return method, modifiers


RunFn = Callable[[ml_collections.ConfigDict, str], Any]
"""`run_fn(config, workdir)` trains one grid point and writes `<workdir>/results.json`."""
PopulationFn = Callable[[Sequence[ml_collections.ConfigDict], Sequence[str], str], Any]
"""`population_fn(configs, workdirs, population_dir)` trains grid points as one population
and writes each `<workdir>/results.json`."""


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One run of a sweep: an arm (`method`, e.g. 'snip' or 'random+erk'), a sparsity (0.0 for
  dense arms) and a seed."""

  method: str
  sparsity: float
  seed: int

  @property
  def is_dense(self) -> bool:
    return parse_arm(self.method)[0] == DENSE

  def __str__(self) -> str:
    if self.is_dense:
      return f"{self.method} seed={self.seed}"
    return f"{self.method} sparsity={self.sparsity:g} seed={self.seed}"


@dataclasses.dataclass
class SweepSummary:
  """What `run_sweep` did: grid points run now, skipped as already done, failed (their error
  is logged; they are retried by the next invocation) and left undone by `max_runs`."""

  ran: list[GridPoint] = dataclasses.field(default_factory=list)
  skipped: list[GridPoint] = dataclasses.field(default_factory=list)
  failed: list[GridPoint] = dataclasses.field(default_factory=list)
  remaining: list[GridPoint] = dataclasses.field(default_factory=list)

  @property
  def attempted(self) -> int:
    """New runs started by this invocation, finished or failed."""
    return len(self.ran) + len(self.failed)


def parse_list(text: str, convert: Callable[[str], Any] = str) -> list[Any]:
  """Splits a comma-separated flag value, dropping blanks: `'0.9, 0.95'` -> `[0.9, 0.95]`."""
  return [convert(item.strip()) for item in text.split(",") if item.strip()]


def expand_grid(
    methods: Sequence[str],
    sparsities: Sequence[float],
    seeds: Sequence[int],
    include_dense: bool = True,
) -> list[GridPoint]:
  """All (method, sparsity, seed) points, seed-major so early chunks cover every method.

  With `include_dense` one dense run per seed comes first in each seed's block (a 'dense'
  entry in `methods` is treated the same way, and dense arms such as 'dense+x2' follow it,
  once per seed).

  Raises:
    ValueError: on an empty list, a bad arm, or a sparsity outside (0, 1).
  """
  if not methods and not include_dense:
    raise ValueError("The sweep has no methods.")
  if not seeds:
    raise ValueError("The sweep has no seeds.")
  arms = list(dict.fromkeys(methods))
  dense_arms = [DENSE] if include_dense or DENSE in arms else []
  dense_arms += [m for m in arms if m != DENSE and parse_arm(m)[0] == DENSE]
  pruned = [m for m in arms if parse_arm(m)[0] != DENSE]
  if pruned and not sparsities:
    raise ValueError("The sweep has pruning methods but no sparsities.")
  for s in sparsities:
    if not 0.0 < s < 1.0:
      raise ValueError(f"Sparsity {s} is outside (0, 1): it is the fraction of weights removed.")
  points = []
  for seed in dict.fromkeys(seeds):
    points += [GridPoint(m, 0.0, seed) for m in dense_arms]
    points += [GridPoint(m, float(s), seed) for s in dict.fromkeys(sparsities) for m in pruned]
  return points


def run_dir(root: str, point: GridPoint) -> str:
  """`<root>/<arm>/s<sparsity>/seed<seed>`, or `<root>/<dense arm>/seed<seed>`."""
  if point.is_dense:
    return os.path.join(root, point.method, f"seed{point.seed}")
  return os.path.join(root, point.method, f"s{point.sparsity:g}", f"seed{point.seed}")


def point_config(base: ml_collections.ConfigDict, point: GridPoint) -> ml_collections.ConfigDict:
  """A copy of `base` for `point`: its method, sparsity, seed and arm modifiers set.

  The arm's name is recorded as `config.sweep_arm`.
  """
  config = copy.deepcopy(base)
  method, modifiers = parse_arm(point.method)
  config.prune.method = method
  config.prune.sparsity = point.sparsity
  config.seed = point.seed
  with config.unlocked():
    config.sweep_arm = point.method
  for modifier in modifiers:
    field, value = ARM_MODIFIERS[modifier]
    section, name = field.split(".")
    if modifier in TRAINING_LENGTH_MODIFIERS:
      value *= config[section][name]
    config[section][name] = value
  return config


def read_results(workdir: str) -> dict[str, Any] | None:
  """The parsed `<workdir>/results.json`, or None if it is missing or not valid JSON.

  A truncated file (a run killed while writing it) reads as None, so that run is redone.
  """
  path = os.path.join(workdir, RESULTS_FILE)
  try:
    with open(path) as f:
      results = json.load(f)
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError):
    logging.warning("Ignoring unreadable %s; that run will be redone.", path)
    return None
  return results if isinstance(results, dict) else None


def group_points(config: ml_collections.ConfigDict, points: Iterable[GridPoint],
                 population_size: int) -> list[list[GridPoint]]:
  """`points` in groups of at most `population_size` whose configs (`point_config`) share
  every field outside `MEMBER_FIELDS`, in the order of their first point.

  Raises:
    ValueError: `population_size < 1`.
  """
  if population_size < 1:
    raise ValueError(f"population_size={population_size} must be at least 1.")
  by_fields: dict[str, list[GridPoint]] = {}
  for point in points:
    by_fields.setdefault(run_grouping.shared_fields(point_config(config, point)), []).append(point)
  return [group[i:i + population_size] for group in by_fields.values()
          for i in range(0, len(group), population_size)]


def population_dir(root: str, workdirs: Sequence[str]) -> str:
  """`<root>/populations/<id>`, where the population of the runs in `workdirs` checkpoints
  (the id hashes the sorted workdirs, so a rerun with the same members finds it)."""
  names = "\n".join(sorted(os.path.relpath(w, root) for w in workdirs))
  return os.path.join(root, "populations", hashlib.sha1(names.encode()).hexdigest()[:16])


def config_differences(expected: ml_collections.ConfigDict, stored: dict[str, Any]) -> list[str]:
  """Dotted names of the fields where a stored results' config differs from `expected`."""
  want = run_grouping.config_fields(expected)
  have = config_checks.dotted_leaves(stored)
  return sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))


def completed(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds finished results of exactly `config`.

  Raises:
    ValueError: if it holds results of another config: reusing them would mix configurations
      in one sweep, redoing them would overwrite them. Use another root.
  """
  results = read_results(workdir)
  if results is None:
    return False
  changed = config_differences(config, results.get("config", {}))
  if changed:
    raise ValueError(
        f"{workdir} holds results of a different config (differs in {changed}). Use another "
        "--workdir or delete those results."
    )
  return True


def _default_run_fn() -> RunFn:
  """`train.train_and_evaluate`, imported only when a sweep really trains."""
  from prospr_jax.experiment import train  # pylint: disable=g-import-not-at-top

  return train.train_and_evaluate


def _default_population_fn() -> PopulationFn:
  """`population_sweep.train_population`, imported only when a sweep really trains."""
  from prospr_jax.experiment import population_sweep  # pylint: disable=g-import-not-at-top

  return population_sweep.train_population


def run_sweep(
    config: ml_collections.ConfigDict,
    root: str,
    points: Iterable[GridPoint],
    run_fn: RunFn | None = None,
    max_runs: int = -1,
    population_size: int = 1,
    population_fn: PopulationFn | None = None,
) -> SweepSummary:
  """Runs every grid point without finished results, at most `max_runs` new ones (-1: all).

  With `population_size > 1` the points are trained in populations (`group_points`,
  `population_fn`, default `population_sweep.train_population`) instead of one by one.

  Args:
    config: base config; each point gets a copy with its method, sparsity and seed.
    root: sweep directory; each point runs in `run_dir(root, point)`.
    points: the grid, e.g. from `expand_grid`.
    run_fn: `run_fn(config, workdir)` training one point and writing its `results.json`
      (default `prospr_jax.experiment.train.train_and_evaluate`).
    max_runs: stop after this many new runs (failed ones count), so a sweep can be run in
      chunks; -1: no limit.
    population_size: most runs per population; 1: single runs (`run_fn`).
    population_fn: trains one population (see `PopulationFn`).

  Returns:
    The points run, skipped, failed and left for a later invocation. The collection files
    under `root` are rewritten after each new run and once at the end.
  """
  if population_size > 1:
    return _run_populations(config, root, points, population_fn or _default_population_fn(),
                            max_runs, population_size)
  run_fn = run_fn or _default_run_fn()
  summary = SweepSummary()
  for point in _unfinished(config, root, points, summary):
    point_cfg, workdir = point_config(config, point), run_dir(root, point)
    if 0 <= max_runs <= summary.attempted:
      summary.remaining.append(point)
      continue
    start = time.perf_counter()
    try:
      results = run_fn(point_cfg, workdir)
    except Exception:  # pylint: disable=broad-except
      # One failing point (e.g. a layer collapse at extreme sparsity) must not block the rest.
      logging.exception("FAILED %s after %.1f s; the sweep goes on.", point,
                        time.perf_counter() - start)
      summary.failed.append(point)
      continue
    finally:
      # Each run compiles its own programs; without this, ~100 runs in one process exhausted
      # memory for XLA:CPU's JIT-compiled code ("LLVM compilation error: Cannot allocate memory").
      jax.clear_caches()
    summary.ran.append(point)
    write_collection(root)
    logging.info("done %s: final test top-1 %s in %.1f s.", point,
                 _format_accuracy(results), time.perf_counter() - start)
  write_collection(root)
  _log_remaining(summary, max_runs)
  return summary


def _unfinished(config: ml_collections.ConfigDict, root: str, points: Iterable[GridPoint],
                summary: SweepSummary) -> list[GridPoint]:
  """The points without finished results; the others are added to `summary.skipped`."""
  todo = []
  for point in points:
    workdir = run_dir(root, point)
    if completed(point_config(config, point), workdir):
      summary.skipped.append(point)
      logging.info("skipped %s: %s exists.", point, os.path.join(workdir, RESULTS_FILE))
    else:
      todo.append(point)
  return todo


def _run_populations(config: ml_collections.ConfigDict, root: str, points: Iterable[GridPoint],
                     population_fn: PopulationFn, max_runs: int,
                     population_size: int) -> SweepSummary:
  """`run_sweep` with populations: unfinished points in `group_points` groups, each trained
  by `population_fn`; a failing population fails all its points (logged, the sweep goes on)."""
  summary = SweepSummary()
  for group in group_points(config, _unfinished(config, root, points, summary),
                            population_size):
    left = len(group) if max_runs < 0 else max(0, max_runs - summary.attempted)
    group, rest = group[:left], group[left:]
    summary.remaining += rest
    if not group:
      continue
    workdirs = [run_dir(root, p) for p in group]
    start = time.perf_counter()
    try:
      results = population_fn([point_config(config, p) for p in group], workdirs,
                              population_dir(root, workdirs))
    except Exception:  # pylint: disable=broad-except
      logging.exception("FAILED the population of %s after %.1f s; the sweep goes on.",
                        ", ".join(map(str, group)), time.perf_counter() - start)
      summary.failed += group
      continue
    finally:
      jax.clear_caches()  # see run_sweep
    summary.ran += group
    write_collection(root)
    for point, result in zip(group, results):
      logging.info("done %s: final test top-1 %s.", point, _format_accuracy(result))
    logging.info("population of %d done in %.1f s.", len(group), time.perf_counter() - start)
  write_collection(root)
  _log_remaining(summary, max_runs)
  return summary


def _log_remaining(summary: SweepSummary, max_runs: int) -> None:
  """Says how many points `max_runs` left for the next invocation, if any."""
  if summary.remaining:
    logging.info("Stopped at max_runs=%d: %d runs left for the next invocation.", max_runs,
                 len(summary.remaining))


def _format_accuracy(results: Any) -> str:
  """`final_test_top1` of a results dict as a percentage, or '?' when absent."""
  try:
    return f"{100 * float(results['final_test_top1']):.2f}%"
  except (TypeError, KeyError, ValueError):
    return "?"


def record_from_results(results: dict[str, Any], workdir: str = "") -> dict[str, Any]:
  """One flat record of a run's `results.json` (arm, sparsity and seed come from its config).

  The record's `method` is the sweep arm (e.g. 'random+erk'; the method name for runs made
  outside a sweep) and `prune_method` the pruning method it ran; `sparsity` is the requested
  one (0.0 for dense); `density_total` is the density actually reached and `layer_density`
  maps each prunable leaf's path to its density. Effective sparsity, collapsed layers and the
  git commit are None for results written before they were recorded.
  """
  config, density = results["config"], results.get("density", {})
  method = config["prune"]["method"]
  links = results.get("connectivity") or {}
  origin = results.get("provenance") or {}
  prefix = "density/"
  return {
      "method": config.get("sweep_arm") or method,
      "prune_method": method,
      "sparsity": 0.0 if method == DENSE else float(config["prune"]["sparsity"]),
      "seed": int(config["seed"]),
      "final_test_top1": results["final_test_top1"],
      "best_test_top1": results.get("best_test_top1"),
      "density_total": density.get("density/total"),
      "effective_density_total": links.get("effective_density/total"),
      "inactive_fraction": links.get("inactive_fraction"),
      "num_empty_layers": len(links["empty_layers"]) if links else None,
      "num_disconnected_layers": len(links["disconnected_layers"]) if links else None,
      "prune_seconds": results.get("prune_seconds"),
      "train_seconds": results.get("train_seconds"),
      "git_commit": origin.get("git_commit"),
      "git_dirty": origin.get("git_dirty"),
      "workdir": workdir,
      "layer_density": {k[len(prefix):]: v for k, v in density.items()
                        if k.startswith(prefix) and k != "density/total"},
  }


def collect_records(root: str) -> list[dict[str, Any]]:
  """Records of every readable `results.json` under `root`, sorted by method, sparsity, seed.

  `workdir` in each record is relative to `root`.
  """
  records = []
  for dirpath, _, filenames in os.walk(root):
    if RESULTS_FILE not in filenames:
      continue
    results = read_results(dirpath)
    if results is None:
      continue
    try:
      records.append(record_from_results(results, os.path.relpath(dirpath, root)))
    except (KeyError, TypeError, ValueError) as e:
      logging.warning("Skipping %s: not a results file (%r).", dirpath, e)
  return sorted(records, key=lambda r: (r["method"], r["sparsity"], r["seed"], r["workdir"]))


def write_collection(root: str) -> list[dict[str, Any]]:
  """(Re)writes `<root>/all_results.json` and `<root>/all_results.csv` (process 0 of a
  multi-process sweep); returns the records."""
  records = collect_records(root)
  if jax.process_index() != 0:
    return records
  os.makedirs(root, exist_ok=True)

  def write_csv(f):
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)

  atomic_files.write_json(os.path.join(root, COLLECTION_JSON), records)
  atomic_files.atomic_write(os.path.join(root, COLLECTION_CSV), write_csv)
  return records


def load_collection(path: str) -> list[dict[str, Any]]:
  """The records of an `all_results.json` written by `write_collection`."""
  with open(path) as f:
    return json.load(f)
