r"""Sweep pruning methods x sparsities x seeds (plus dense), resumably; collect all results.

  python experiments/sweep.py --config=configs/default.py --workdir=/tmp/sweep \
      --methods=prospr,snip --sparsities=0.9,0.98 --seeds=0,1 --max_runs=4

Each run trains in `<workdir>/<method>/s<sparsity>/seed<seed>` (`<workdir>/dense/seed<seed>`);
runs whose results.json exists are skipped, so invoking the same command again resumes the
sweep (`--max_runs` runs it in chunks). After each run `<workdir>/all_results.{json,csv}` are
rewritten; `experiments/report.py` makes the table and plots from `all_results.json`.

`--population_size=P` trains the runs that differ only in method, sparsity, allocation, sanity
check and seed together, P at a time, in one program each (`population_sweep`; in-memory data
sets); 0 (the default) picks P for the platform (8 on CPU, 32 on GPU/TPU), 1 trains every run
alone. Members write the same results as single runs.

Several processes (`--config.distributed.*`, the same command started on every host, with a
--workdir all of them see) join once and run every point of the sweep together; a
population's members are sharded over all their devices when the device count divides P.

Every point's config is checked before any run starts: a bad field ends the sweep at once
with status 1 and one line naming the point and the field.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for `configs.*` imports

from absl import app, flags, logging
from ml_collections import config_flags

from prospr_jax.experiment import (
    compile_cache, config_checks, distributed, grid_sweep, population_sweep, run_plan)
from prospr_jax.saliency import registry

_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_METHODS = flags.DEFINE_string(
    "methods", ",".join(registry.default_sweep_methods()),
    "Comma-separated pruning methods (sweep arms).")
_SPARSITIES = flags.DEFINE_string(
    "sparsities", ",".join(map(str, grid_sweep.DEFAULT_SPARSITIES)), "Comma-separated sparsities.")
_SEEDS = flags.DEFINE_string(
    "seeds", ",".join(map(str, grid_sweep.DEFAULT_SEEDS)), "Comma-separated seeds.")
_INCLUDE_DENSE = flags.DEFINE_bool("include_dense", True, "Add one dense run per seed.")
_MAX_RUNS = flags.DEFINE_integer(
    "max_runs", -1, "Stop after this many new runs (-1: no limit); rerun to continue.")
_POPULATION_SIZE = flags.DEFINE_integer(
    "population_size", 0,
    "Most runs trained together as one population; 1: one at a time; 0: the platform's default "
    "(population_sweep.default_population_size).")
config_flags.DEFINE_config_file("config", "configs/default.py", "Base experiment configuration.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable(flags.FLAGS.config.compile_cache_dir)
  logging.set_verbosity(logging.INFO)
  try:
    with config_checks.refusing_as_config_error():
      # Before anything touches a device: every run of the sweep uses the joined processes.
      distributed.initialize_distributed(flags.FLAGS.config.distributed)
  except config_checks.ConfigError as e:
    raise SystemExit(f"ERROR: {e}") from None
  points = grid_sweep.expand_grid(
      grid_sweep.parse_list(_METHODS.value),
      grid_sweep.parse_list(_SPARSITIES.value, float),
      grid_sweep.parse_list(_SEEDS.value, int),
      include_dense=_INCLUDE_DENSE.value,
  )
  config = flags.FLAGS.config
  population_size = _POPULATION_SIZE.value or population_sweep.default_population_size()
  if population_size < 1:
    raise app.UsageError(f"--population_size={population_size} must be at least 0.")
  if population_size > 1:
    try:
      population_sweep.check_population_config(config)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  try:
    run_plan.check_runs(((str(p), grid_sweep.point_config(config, p)) for p in points),
                        distributed.data_mesh())
  except config_checks.ConfigError as e:
    raise SystemExit(f"ERROR: {e}") from None
  summary = grid_sweep.run_sweep(config, _WORKDIR.value, points, max_runs=_MAX_RUNS.value,
                                 population_size=population_size)
  logging.info("Sweep of %d runs: %d run now, %d already done, %d failed, %d left. Results: %s",
               len(points), len(summary.ran), len(summary.skipped), len(summary.failed),
               len(summary.remaining), f"{_WORKDIR.value}/{grid_sweep.COLLECTION_JSON}")
  if summary.failed:
    raise SystemExit(f"{len(summary.failed)} runs failed (logged above): "
                     + "; ".join(map(str, summary.failed)))


if __name__ == "__main__":
  app.run(main)
