r"""Markdown table and plots of a sweep's results (from experiments/sweep.py).

  python experiments/report.py --results=/tmp/sweep/all_results.json --output_dir=/tmp/report

Writes `results_table.md` (final test top-1, mean ± std over seeds, methods x sparsities),
`accuracy_vs_sparsity.png` and `layer_density.png` (per-layer density at --density_sparsity).
"""

from absl import app, flags, logging

from prospr_jax import report, sweep

_RESULTS = flags.DEFINE_string("results", None, "all_results.json written by experiments/sweep.py.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the table and plots are written.")
_DENSITY_SPARSITY = flags.DEFINE_float(
    "density_sparsity", None, "Sparsity of the per-layer density plot (default: the highest).")
_EXPECTED_SEEDS = flags.DEFINE_integer(
    "expected_seeds", None, "Seeds per full cell (default: distinct seeds in the results).")
flags.mark_flags_as_required(["results", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  records = sweep.load_collection(_RESULTS.value)
  if not records:
    raise app.UsageError(f"{_RESULTS.value} holds no results.")
  paths = report.write_report(records, _OUTPUT_DIR.value, _DENSITY_SPARSITY.value,
                              _EXPECTED_SEEDS.value)
  for path in paths:
    logging.info("Wrote %s", path)
  with open(paths[0]) as f:
    print(f.read())


if __name__ == "__main__":
  app.run(main)
