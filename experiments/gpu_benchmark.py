r"""The paper's settings on one accelerator, beside the authors' PyTorch ProsPr, in a time budget.

  python experiments/gpu_benchmark.py --output_dir=/tmp/gpu --repeats=3
  bash scripts/gpu_benchmark.sh     # its 'cost' stage: the same within the one-call GPU run

First, before JAX touches the accelerator, the reference (experiments/reference_benchmark.py,
run with --torch_python, reading the authors' code from --reference_dir) on the same presets
and batch sizes: its published full mode, which moves to the CPU, for the one --published_cpu
setting; then per setting its masked training step, full ProsPr kept on the GPU for each k and
first-order ProsPr at the reference k. Then prospr_jax: experiments/benchmark.py's measurements
for every preset and batch size, first without remat, then with (no memory table; each timed
function's compiled peak memory is reported). Every time is the median of --repeats runs after
a warm-up.

Time guard: nothing starts after --budget_s seconds (the reference's jobs stop starting at
--reference_budget_s); after each step `benchmark_gpu.json` and `benchmark_gpu.txt` in
--output_dir are rewritten with everything so far, so a run killed at a hard time limit keeps
what it measured. Skipped and failed configurations are listed there
(`prospr_jax.benchmark.gpu_suite`).
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import gpu_report, gpu_suite, setting_flags
from prospr_jax.benchmark.synthetic_setup import PRESETS

_PRESETS = flags.DEFINE_list("presets", ["cifar10_resnet20", "cifar10_vgg16"],
                             f"Settings from {sorted(PRESETS)}.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "256"], "Batch sizes.")
_KS = flags.DEFINE_list("ks", ["1", "3", "10"], "ProsPr inner steps k to time.")
_REPEATS = setting_flags.define_repeats_flag()
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
                                     "The authors' code (see experiments/reference_benchmark.py).")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", sys.executable,
                                    "Command that runs Python with torch for the reference.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where results go.", required=True)

REFERENCE_SCRIPT = pathlib.Path(__file__).resolve().parent / "reference_benchmark.py"


_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  unknown = set(_PRESETS.value) - set(PRESETS)
  if unknown:
    raise app.UsageError(f"Unknown presets {sorted(unknown)}; choose from {sorted(PRESETS)}.")
  try:
    published_cpu = gpu_suite.published_cpu_setting(_PUBLISHED_CPU.value)
  except ValueError as e:
    raise app.UsageError(f"--published_cpu: {e}") from e
  if published_cpu and published_cpu[0] not in _PRESETS.value:
    raise app.UsageError("--published_cpu must name one of --presets.")
  settings = {p: PRESETS[p] for p in _PRESETS.value}
  batch_sizes = tuple(int(b) for b in _BATCH_SIZES.value)
  ks = tuple(int(k) for k in _KS.value)
  config = gpu_suite.SuiteConfig(
      settings=settings, batch_sizes=batch_sizes, ks=ks, repeats=_REPEATS.value,
      budget_s=_BUDGET_S.value,
      reference_jobs=tuple(gpu_suite.reference_plan(settings, batch_sizes, ks, published_cpu)),
      reference_script=str(REFERENCE_SCRIPT), reference_dir=_REFERENCE_DIR.value,
      torch_python=_TORCH_PYTHON.value, reference_budget_s=_REFERENCE_BUDGET_S.value)
  suite = gpu_suite.run_suite(config, pathlib.Path(_OUTPUT_DIR.value))
  print(gpu_report.format_summary(suite))
  print(f"\nwrote {os.path.join(_OUTPUT_DIR.value, 'benchmark_gpu')}.json and .txt")


if __name__ == "__main__":
  app.run(main)
