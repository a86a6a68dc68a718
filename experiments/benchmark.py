r"""Cost of ProsPr relative to training, measured side by side in one process.

  python experiments/benchmark.py                      # small_convnet, batch 128, CPU/GPU/TPU
  python experiments/benchmark.py --preset=cifar10_resnet20 --remat  # a paper setting, remat
  python experiments/benchmark.py --smoke              # tiny and fast (used by the tests)
  python experiments/benchmark.py --preset=cifar10_resnet20 \
      --preset=fashion_mnist_small_convnet --reference=reference.jsonl   # several settings,
      # side by side with experiments/reference_benchmark.py's times (scripts/cpu_benchmark.sh)

Every measured function is jitted, lowered and compiled once (`jit(f).lower(...).compile()`,
timed as the compile time), run once as a warm-up, then run `--repeats` times, the functions
taking turns so that background load affects them alike; the run time is the median wall time
of one call with `jax.block_until_ready` (`prospr_jax.benchmark.timing`). Inputs are synthetic
random batches (timing and memory do not depend on the data). Reported, as ratios plus
absolute ms (`prospr_jax.benchmark.cost_suite`):

  * full ProsPr saliency (k inner steps; with --remat, `remat=True`) / one jitted masked
    training step;
  * first-order ProsPr / full ProsPr and SNIP / full ProsPr at the reference k (3, or the
    largest k <= 3 in --ks);
  * the masked training step (`train_step.make_optimizer`: keep_masked -> weight decay -> SGD
    with momentum) / the same chain without keep_masked (dense);
  * with --reference (the JSON lines of experiments/reference_benchmark.py), side by side with
    the authors' PyTorch ProsPr on the same setting (its jobs with this model name, batch size,
    input shape and number of classes): the training step, full and first-order ProsPr as
    prospr_jax / reference wall-time ratios, and full ProsPr / training step on both sides;
  * the compiled memory of the ProsPr meta-gradient with and without remat for each k in
    --memory_ks (none: skipped), as ratios to the smallest k, from
    `Compiled.memory_analysis()`: peak = argument + output + temp - alias bytes (the k + 1
    distinct input batches are arguments, so they are included); every timed function's own
    peak is reported beside its times.

Each --preset (repeatable) is measured in turn in the same process; --output then holds
`{"runs": [one result record per setting]}` (`prospr_jax.benchmark.result_record`).

Imports no TensorFlow, tfds or ml-collections: it runs where just jax, flax, optax and absl are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import app, flags

from prospr_jax.benchmark import cost_report, cost_suite, result_record, setting_flags
from prospr_jax.benchmark.reference_comparison import read_reference
from prospr_jax.benchmark.synthetic_setup import PRESETS

_PRESET = flags.DEFINE_multi_enum(
    "preset", [], list(PRESETS),
    "A setting: sets --model, --input_shape, --num_classes. Repeat it to measure several.")
_SETTING = setting_flags.define_setting_flags()
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Number of classes.")
_REPEATS = setting_flags.define_repeats_flag()
_KS = flags.DEFINE_list("ks", ["1", "3", "10"], "ProsPr inner steps k to time.")
_MEMORY_KS = flags.DEFINE_list(
    "memory_ks", ["1", "3", "10", "30"], "k for the memory table (empty: no table)."
)
_REMAT = flags.DEFINE_bool("remat", False, "Time full ProsPr with remat=True.")
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "Tiny run: lenet300100, batch 8, 1 repetition, ks 1, memory_ks 1,3."
)
_OUTPUT = setting_flags.define_output_flag()
_REFERENCE = flags.DEFINE_string(
    "reference", None,
    "JSON lines of experiments/reference_benchmark.py: adds the side-by-side table and its "
    "targets.")


def _ints(values: Sequence[str]) -> tuple[int, ...]:
  return tuple(int(v) for v in values)


def _model_settings() -> list[dict[str, Any]]:
  """`model_name`, `input_shape` and `num_classes` of each --preset, else from their own flags."""
  own = (_SETTING.model, _SETTING.input_shape, _NUM_CLASSES)
  if not _PRESET.value:
    return [{"model_name": _SETTING.model.value, "input_shape": _SETTING.shape(),
             "num_classes": _NUM_CLASSES.value}]
  if any(f.present for f in own):
    raise app.UsageError("--preset sets --model, --input_shape and --num_classes; give either.")
  return [PRESETS[name] for name in _PRESET.value]


_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  common = {"batch_size": _SETTING.batch_size.value, "repeats": _REPEATS.value,
            "ks": _ints(_KS.value), "memory_ks": _ints(_MEMORY_KS.value), "remat": _REMAT.value,
            "reference": read_reference(_REFERENCE.value) if _REFERENCE.value else None}
  runs = []
  for settings in _model_settings():
    kwargs = settings | common | (cost_suite.SMOKE_SETTINGS if _SMOKE.value else {})
    runs.append(cost_suite.run_benchmark(**kwargs))
    print(cost_report.format_report(runs[-1]), end="\n\n", flush=True)
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, {"runs": runs})
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
