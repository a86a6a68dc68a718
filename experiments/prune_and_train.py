r"""Prune a network at initialization, train it, print its test accuracy.

  python experiments/prune_and_train.py --config=configs/default.py --workdir=/tmp/prospr \
      --config.prune.method=snip --config.prune.sparsity=0.95
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for `configs.*` imports

from absl import app, flags, logging
from ml_collections import config_flags

from prospr_jax import train

_WORKDIR = flags.DEFINE_string("workdir", None, "Where config, masks and results are written.")
config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment configuration.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  results = train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  summary = {
      "method": results["config"]["prune"]["method"],
      "sparsity": results["density"]["sparsity/total"],
      "final_test_top1": results["final_test_top1"],
      "best_test_top1": results["best_test_top1"],
      "prune_seconds": round(results["prune_seconds"], 2),
      "train_seconds": round(results["train_seconds"], 1),
  }
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
