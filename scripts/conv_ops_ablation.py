r"""Ablation of `prospr_jax.ops.conv_ops` on one zoo setting, all variants side by side in one process.

  PYTHONPATH=. .venv/bin/python scripts/conv_ops_ablation.py --model=resnet20_prospr \
      --input_shape=32,32,3 --variants=lax,conv_wgrad,conv_ops --memory_k=0

Variants (`conv_variants.py`; selected at trace time, each compiled from a fresh trace): `lax`
(every conv `lax.conv_general_dilated`), `conv_wgrad` (`conv_ops` with the weight gradient as
one convolution) and `conv_ops` as shipped.

For the masked training step, full ProsPr and first-order ProsPr at --k (experiments/benchmark.py's
functions and random batches) it prints each variant's largest score difference from the first
variant's (per leaf, relative to that leaf's largest score), the median run time of interleaved
repetitions with full ProsPr / training step, the compile times, and the compiled peak memory of
remat ProsPr at k = 1 and --memory_k.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import jax
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conv_variants  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS  # --model, --input_shape, --batch_size and --repeats are benchmark.py's
_K = flags.DEFINE_integer("k", 3, "Inner steps of ProsPr.")
_VARIANTS = flags.DEFINE_list("variants", list(conv_variants.VARIANTS), "Variants, in order.")
_MEMORY_K = flags.DEFINE_integer(
    "memory_k", 30, "Also compile remat ProsPr at k = 1 and this k and print their peak memory "
                    "ratio (0: skip).")


def main(argv: Sequence[str]) -> None:
  del argv
  k, variants, batch_size = _K.value, _VARIANTS.value, FLAGS.batch_size
  names = ["train_step_masked", f"prospr_k{k}", f"prospr_first_order_k{k}"]
  setup = benchmark.make_setup(FLAGS.model, batch_size, tuple(int(s) for s in FLAGS.input_shape),
                               10, num_batches=max(k, _MEMORY_K.value) + 1)
  compiled, compile_s, memory = {}, {}, {}
  for variant in variants:
    jax.clear_caches()  # the library's jits are module-level: never reuse another variant's trace
    conv_variants.use(variant)
    cases = benchmark.timing_cases(setup, [k])
    for name in names:
      fn, args = cases[name]
      executable, compile_s[(name, variant)] = benchmark.compile_fn(fn, *args)
      compiled[(name, variant)] = (executable, args)
      print(f"compiled {name} ({variant}) in {compile_s[(name, variant)]:.1f} s", flush=True)
    if _MEMORY_K.value:
      peaks = [benchmark.memory_stats(benchmark.compile_fn(
          benchmark.prospr_fn(setup, m, remat=True), *benchmark.prospr_args(setup, m))[0])["peak"]
               for m in (1, _MEMORY_K.value)]
      memory[variant] = (peaks[0] / 2**20, peaks[1] / 2**20)
  conv_variants.use("conv_ops")
  for name in names[1:]:
    first = jax.tree.leaves(compiled[(name, variants[0])][0](*compiled[(name, variants[0])][1]))
    for variant in variants[1:]:
      got = jax.tree.leaves(compiled[(name, variant)][0](*compiled[(name, variant)][1]))
      print(f"{name}: {variant} vs {variants[0]}: largest |difference| / largest |score| of a "
            f"leaf = {conv_variants.largest_relative_difference(first, got):.2e}")
  run = benchmark.interleaved_run_ms(compiled, FLAGS.repeats)
  print(f"\n{FLAGS.model}, batch {batch_size}, run: median of {FLAGS.repeats} (ms); compile (s)")
  print(f"{'':30s}" + "".join(f"{v:>12s}" for v in variants))
  for name in names:
    print(f"{name:30s}" + "".join(f"{run[(name, v)]:12.1f}" for v in variants))
  print(f"{'full ProsPr / train step':30s}"
        + "".join(f"{run[(names[1], v)] / run[(names[0], v)]:12.2f}" for v in variants))
  for name in names:
    print(f"{'compile ' + name:30s}" + "".join(f"{compile_s[(name, v)]:12.1f}" for v in variants))
  if memory:
    m = _MEMORY_K.value
    print(f"{f'remat peak MiB k=1 / k={m}':30s}"
          + "".join(f"{f'{memory[v][0]:.0f}/{memory[v][1]:.0f}':>12s}" for v in variants))
    print(f"{f'remat peak k={m} / k=1':30s}"
          + "".join(f"{memory[v][1] / memory[v][0]:12.2f}" for v in variants))


if __name__ == "__main__":
  app.run(main)
