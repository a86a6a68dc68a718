r"""How far float32 ProsPr scores are from float64 ones, with `lax` convs and with `conv_ops`.

  PYTHONPATH=. .venv/bin/python scripts/score_precision_check.py --model=resnet20_prospr \
      --input_shape=32,32,3 --first_order

Computes the scores of one setting (experiments/benchmark.py's random batches, k = 3) in
float64 with `conv_ops` as the truth, then in float32 with each variant of `conv_variants.py`
(`lax`, `conv_wgrad`, `conv_ops`), and prints for each the largest |float32 - float64| of a leaf
relative to that leaf's largest |float64| score.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conv_variants  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS  # --model, --input_shape and --batch_size are benchmark.py's
_FIRST_ORDER = flags.DEFINE_bool("first_order", False, "First-order ProsPr instead of full.")
K = 3


def scores(setup: benchmark.Setup, variant: str, float64: bool) -> list[np.ndarray]:
  """The ProsPr score leaves of `setup` with the conv `variant`, in float64 or float32."""
  jax.clear_caches()  # the library's jits are module-level: never reuse another variant's trace
  conv_variants.use(variant)
  args = benchmark.prospr_args(setup, K)
  if float64:
    args = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else a, args)
  fn = benchmark.prospr_fn(setup, K, first_order=_FIRST_ORDER.value)
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(fn(*args))]


def main(argv: Sequence[str]) -> None:
  del argv
  setup = benchmark.make_setup(FLAGS.model, FLAGS.batch_size,
                               tuple(int(s) for s in FLAGS.input_shape), 10, num_batches=K + 1)
  with jax.enable_x64(True):
    truth = scores(setup, "conv_ops", float64=True)
  kind = "first-order" if _FIRST_ORDER.value else "full"
  for variant in conv_variants.VARIANTS:
    got = scores(setup, variant, float64=False)
    error = conv_variants.largest_relative_difference(truth, got)
    print(f"{FLAGS.model} {kind} ProsPr k={K}, {variant}: float32 vs float64, largest "
          f"|difference| / largest |score| of a leaf = {error:.2e}", flush=True)


if __name__ == "__main__":
  app.run(main)
