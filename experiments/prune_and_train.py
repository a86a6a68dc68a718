r"""Prune a network at initialization, train it, print its test accuracy.

  python experiments/prune_and_train.py --config=configs/default.py --workdir=/tmp/prospr \
      --config.prune.method=snip --config.prune.sparsity=0.95

Prints a progress line every `config.train.log_every_steps` steps and a summary at the end;
the INFO logs of JAX, orbax and tfds are hidden unless `--verbosity=0` (or higher). Exits with
status 1 and one line if the config cannot run or the workdir holds another run's config
(before anything is written), and with a message if the training loss became NaN or inf.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for `configs.*` imports

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from prospr_jax.experiment import (
    command_line, compile_cache, config_checks, progress, prune_config, train)

_WORKDIR = flags.DEFINE_string("workdir", None, "Where config, masks and results are written.")
command_line.define_config_file("configs/default.py", "Experiment configuration.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable(flags.FLAGS.config.compile_cache_dir)
  if not flags.FLAGS["verbosity"].present:  # absl's --verbosity: the libraries' logs
    logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  try:
    prune_config.check_overrides(
        config.prune, [k.removeprefix("prune.") for k in overrides if k.startswith("prune.")]
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  progress.show_on(sys.stderr)
  try:
    results = train.train_and_evaluate(config, _WORKDIR.value)
  except config_checks.ConfigError as e:
    raise SystemExit(f"ERROR: {e}") from None
  if results["diverged"]:
    raise SystemExit(f"Training diverged: the loss of step {results['diverged']['step']} is not "
                     f"finite (NaN or inf); {_WORKDIR.value}/results.json records the epochs "
                     "before it. Try a lower --config.train.learning_rate.")
  if jax.process_index() == 0:
    print(progress.summary(results, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main, flags_parser=command_line.parse_flags)
