r"""Ablation of `prospr_jax.ops.conv_ops` on one zoo setting: its variants side by side in one run.

  PYTHONPATH=. .venv/bin/python experiments/conv_ops_ablation.py --model=resnet20_prospr \
      --input_shape=32,32,3 --variants=lax,conv_wgrad,conv_ops --memory_k=0

Variants (`prospr_jax.benchmark.conv_variants`; selected at trace time, each compiled from a
fresh trace): `lax` (every conv `lax.conv_general_dilated`), `conv_wgrad` (`conv_ops` with the
weight gradient as one convolution) and `conv_ops` as shipped.

For the masked training step, full ProsPr and first-order ProsPr at --k (experiments/benchmark.py's
functions and random batches) it prints each variant's largest score difference from the first
variant's (per leaf, relative to that leaf's largest score), the median run time of interleaved
repetitions with full ProsPr / training step, the compile times, and the compiled peak memory of
remat ProsPr at k = 1 and --memory_k (`prospr_jax.benchmark.conv_ablation`).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import conv_ablation, conv_variants, result_record, setting_flags

_SETTING = setting_flags.define_setting_flags()
_REPEATS = setting_flags.define_repeats_flag()
_K = flags.DEFINE_integer("k", 3, "Inner steps of ProsPr.")
_VARIANTS = flags.DEFINE_list("variants", list(conv_variants.VARIANTS),
                              f"Variants of {conv_variants.VARIANTS}, in order.")
_MEMORY_K = flags.DEFINE_integer(
    "memory_k", 30, "Also compile remat ProsPr at k = 1 and this k and print their peak memory "
                    "ratio (0: skip).")
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  setup = _SETTING.make_setup(num_batches=max(_K.value, _MEMORY_K.value) + 1)
  record = conv_ablation.run_ablation(setup, _SETTING.config(), _VARIANTS.value, _K.value,
                                      _MEMORY_K.value, _REPEATS.value)
  print(conv_ablation.format_ablation(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
