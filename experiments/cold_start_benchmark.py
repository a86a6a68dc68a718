r"""Cold time to a mask: prune_and_train.py from process start to masks.npz, beside the authors.

  PYTHONPATH=. .venv/bin/python experiments/cold_start_benchmark.py \
      --torch_python=/path/to/torch-venv/bin/python --ref_dir=third_party_ref \
      --output=results/cold_start.json                     # k = 1,3,10,30,100, 3 rounds each
  PYTHONPATH=. .venv/bin/python experiments/cold_start_benchmark.py --ks=3 --repeats=1 \
      --overrides=--config.prune.batch_size=32             # prospr_jax alone, one quick round

For each k in --ks, --repeats rounds of: experiments/prune_and_train.py (configs/default.py,
`--config.prune.num_steps=k`, then --overrides) run with an empty persistent compilation cache
and then with the cache that run filled, each timed in seconds from its start until its
masks.npz exists; and, with --torch_python (a Python with torch and torchvision, see
experiments/reference_benchmark.py for the authors' files in --ref_dir), the authors' PyTorch
ProsPr run eagerly once in a fresh process (reference_benchmark.py --repeats=0, two threads).
Prints a markdown table of the medians and their ratios to the reference against the goals
(warm cache <= 1.2x the reference, empty cache <= 2x); --output writes the raw seconds as a
`result_record` (`prospr_jax.benchmark.cold_start`). It measures whole processes: run it on a
quiet machine.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import cold_start, result_record, setting_flags

_KS = flags.DEFINE_list("ks", [str(k) for k in cold_start.KS], "ProsPr inner steps k.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds per k (medians reported).")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", None,
    "Command of a Python with torch and torchvision that runs the reference; none: skip it.")
_REF_DIR = flags.DEFINE_string("ref_dir", "third_party_ref",
                               "The authors' code (see experiments/reference_benchmark.py).")
_OVERRIDES = flags.DEFINE_list(
    "overrides", [], "Extra --config.<field>=<value> arguments of prune_and_train.py.")
_OUTPUT = setting_flags.define_output_flag()


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    ks = [int(k) for k in _KS.value]
  except ValueError as e:
    raise app.UsageError(f"--ks takes integers, got {_KS.value}.") from e
  try:
    record = cold_start.run_cold_start(
        ks, _REPEATS.value, shlex.quote(sys.executable), _OVERRIDES.value, _TORCH_PYTHON.value,
        _REF_DIR.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(cold_start.format_cold_start(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
