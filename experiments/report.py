r"""Markdown table and plots of a sweep's results (from experiments/sweep.py).

  python experiments/report.py --results=/tmp/sweep/all_results.json --output_dir=/tmp/report
  python experiments/report.py --root=/tmp/sweep --output_dir=/tmp/report

Writes `results_table.md` (final test top-1, mean ± std over seeds, methods x sparsities; where
the results have them: the paired differences against ProsPr, uncorrected and Holm-corrected,
at equal and at matched effective density, effective density, convergence, sanity checks and
mask-finding times) and the plots `accuracy_vs_sparsity.png`,
`accuracy_vs_effective_density.png`, `differences_to_reference.png` and `layer_density.png`
(per-layer density at --density_sparsity); `--average_sparsities` adds ProsPr's advantage
averaged over those densities, one comparison per method (a table and
`range_differences.png`). `--root` reads every results.json
under a sweep directory afresh instead of its all_results.json. `--methods` reports only those
arms (with their sanity-check and convergence arms, and dense): the corrected family is then
the one named, not whatever else the directory holds. Results from more than one git commit (or
a modified tree) are refused unless --allow_mixed_commits.
"""

from absl import app, flags, logging

from prospr_jax.experiment import compile_cache, grid_sweep, study_records, study_report

_RESULTS = flags.DEFINE_string("results", None, "all_results.json written by experiments/sweep.py.")
_ROOT = flags.DEFINE_string("root", None, "A sweep directory: collect its results.json files.")
_ALLOW_MIXED = flags.DEFINE_bool(
    "allow_mixed_commits", False, "Report results made by different code versions together.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the table and plots are written.")
_DENSITY_SPARSITY = flags.DEFINE_float(
    "density_sparsity", None, "Sparsity of the per-layer density plot (default: the highest).")
_EXPECTED_SEEDS = flags.DEFINE_integer(
    "expected_seeds", None, "Seeds per full cell (default: distinct seeds in the results).")
_METHODS = flags.DEFINE_list(
    "methods", None, "Report only these arms, their sanity-check and convergence arms, and dense "
    "(default: every arm in the results).")
_AVERAGE_SPARSITIES = flags.DEFINE_list(
    "average_sparsities", None, "Also compare ProsPr with each method averaged over these "
    "sparsities, one comparison per method (e.g. the paper's range).")
_COMPILE_CACHE_DIR = compile_cache.define_flag(None)
flags.mark_flags_as_required(["output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable(_COMPILE_CACHE_DIR.value)
  logging.set_verbosity(logging.INFO)
  if (_RESULTS.value is None) == (_ROOT.value is None):
    raise app.UsageError("Give exactly one of --results and --root.")
  source = _RESULTS.value or _ROOT.value
  records = (grid_sweep.load_collection(source) if _RESULTS.value
             else grid_sweep.collect_records(_ROOT.value))
  if not records:
    raise app.UsageError(f"{source} holds no results.")
  try:
    if _METHODS.value:
      records = study_records.select_arms(records, _METHODS.value)
    average = [float(s) for s in _AVERAGE_SPARSITIES.value or ()]
    paths = study_report.write_report(records, _OUTPUT_DIR.value, _DENSITY_SPARSITY.value,
                                      _EXPECTED_SEEDS.value, _ALLOW_MIXED.value, average)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for path in paths:
    logging.info("Wrote %s", path)
  with open(paths[0]) as f:
    print(f.read())


if __name__ == "__main__":
  app.run(main)
