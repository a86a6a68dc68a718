r"""How far float32 ProsPr scores are from float64 ones, with `lax` convs and with `conv_ops`.

  PYTHONPATH=. .venv/bin/python experiments/score_precision_check.py --model=resnet20_prospr \
      --input_shape=32,32,3 --first_order

Computes the scores of one setting (experiments/benchmark.py's random batches, k = 3) in
float64 with `conv_ops` as the truth, then in float32 with each variant of
`prospr_jax.benchmark.conv_variants` (`lax`, `conv_wgrad`, `conv_ops`), and prints for each the
largest |float32 - float64| of a leaf relative to that leaf's largest |float64| score
(`prospr_jax.benchmark.score_precision`).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import result_record, score_precision, setting_flags

_SETTING = setting_flags.define_setting_flags()
_FIRST_ORDER = flags.DEFINE_bool("first_order", False, "First-order ProsPr instead of full.")
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  setup = _SETTING.make_setup(num_batches=score_precision.K + 1)
  record = score_precision.precision_check(setup, _SETTING.config(), _FIRST_ORDER.value)
  print(score_precision.format_precision(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
