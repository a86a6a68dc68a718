r"""Ablation of `prospr_jax.conv_ops` on one zoo setting, all variants side by side in one process.

  PYTHONPATH=. .venv/bin/python scripts/conv_ops_ablation.py --model=resnet20_prospr \
      --input_shape=32,32,3 --variants=lax,unchunked,chunked

Variants (selected at trace time, each compiled from a fresh trace):
  lax        every conv is `lax.conv_general_dilated` (the library before `conv_ops`);
  unchunked  `conv_ops`' primitives, the weight gradient as one conv over the whole batch;
  chunked    `conv_ops` as shipped: the weight gradient summed over chunks of
             `conv_ops.WEIGHT_GRAD_CHUNK` samples.

For the masked training step, full ProsPr and first-order ProsPr at --k (experiments/benchmark.py's
functions and random batches) it prints the compile time, each variant's largest score
difference from the first variant's (per leaf, relative to that leaf's largest score), and the
median run time of interleaved repetitions with full ProsPr / training step.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top

from prospr_jax import conv_ops  # noqa: E402  pylint: disable=g-import-not-at-top

_MODEL = flags.DEFINE_string("model", "small_convnet", "A zoo model name.")
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["28", "28", "1"], "Input shape H,W,C.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_K = flags.DEFINE_integer("k", 3, "Inner steps of ProsPr.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (after one warm-up).")
_VARIANTS = flags.DEFINE_list("variants", ["lax", "unchunked", "chunked"], "Variants, in order.")

_SHIPPED = (conv_ops.conv_general_dilated, conv_ops.WEIGHT_GRAD_CHUNK)


def use_variant(name: str, batch_size: int) -> None:
  """Points `conv_ops` (read by the zoo's convs at trace time) at the variant `name`."""
  conv_ops.conv_general_dilated, conv_ops.WEIGHT_GRAD_CHUNK = _SHIPPED
  if name == "lax":
    conv_ops.conv_general_dilated = lax.conv_general_dilated
  elif name == "unchunked":
    conv_ops.WEIGHT_GRAD_CHUNK = batch_size
  elif name != "chunked":
    raise app.UsageError(f"Unknown variant {name!r}.")


def largest_relative_difference(a: Sequence[jax.Array], b: Sequence[jax.Array]) -> float:
  """max over leaves of max|a - b| / max|a| (leaves with an all-zero `a`: max|a - b|)."""
  return max(float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(x)), 1e-30))
             for x, y in zip(a, b))


def main(argv: Sequence[str]) -> None:
  del argv
  k, variants = _K.value, _VARIANTS.value
  names = ["train_step_masked", f"prospr_k{k}", f"prospr_first_order_k{k}"]
  setup = benchmark.make_setup(_MODEL.value, _BATCH_SIZE.value,
                               tuple(int(s) for s in _INPUT_SHAPE.value), 10, num_batches=k + 1)
  compiled = {}
  for variant in variants:
    jax.clear_caches()  # the library's jits are module-level: never reuse another variant's trace
    use_variant(variant, _BATCH_SIZE.value)
    cases = benchmark.timing_cases(setup, [k])
    for name in names:
      fn, args = cases[name]
      compiled[(name, variant)] = (benchmark.compile_fn(fn, *args)[0], args)
      print(f"compiled {name} ({variant})", flush=True)
  use_variant("chunked", _BATCH_SIZE.value)
  for name in names[1:]:
    first = jax.tree.leaves(compiled[(name, variants[0])][0](*compiled[(name, variants[0])][1]))
    for variant in variants[1:]:
      got = jax.tree.leaves(compiled[(name, variant)][0](*compiled[(name, variant)][1]))
      print(f"{name}: {variant} vs {variants[0]}: largest |difference| / largest |score| of a "
            f"leaf = {largest_relative_difference(first, got):.2e}")
  run = benchmark.interleaved_run_ms(compiled, _REPEATS.value)
  print(f"\n{_MODEL.value}, batch {_BATCH_SIZE.value}, median of {_REPEATS.value} (ms)")
  print(f"{'':26s}" + "".join(f"{v:>12s}" for v in variants))
  for name in names:
    print(f"{name:26s}" + "".join(f"{run[(name, v)]:12.1f}" for v in variants))
  print(f"{'full ProsPr / train step':26s}"
        + "".join(f"{run[(names[1], v)] / run[(names[0], v)]:12.2f}" for v in variants))


if __name__ == "__main__":
  app.run(main)
