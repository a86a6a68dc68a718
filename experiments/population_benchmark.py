r"""Population training throughput: P members in one step against P runs one after another.

  python experiments/population_benchmark.py                      # small_convnet, lenet300100
  python experiments/population_benchmark.py --models=lenet300100 --sizes=1,8 --repeats=3
  python experiments/population_benchmark.py --smoke              # tiny and fast
  python experiments/population_benchmark.py --models=resnet20_prospr --image_shape=32,32,3 \
      --formulations=vmap --sizes=1,4,16,32                         # the GPU table

See `prospr_jax.benchmark.population_suite`: for each model, formulation ('vmap', 'unrolled')
and population size P, member steps per second relative to P = 1 unrolled (one run alone),
with compile time and compiled peak memory per member, the settings taking turns.

Imports no TensorFlow, tfds or ml-collections.
"""

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import population_suite, result_record, setting_flags

_MODELS = flags.DEFINE_list("models", ["small_convnet", "lenet300100"], "Zoo model names.")
_SIZES = flags.DEFINE_list("sizes", ["1", "2", "4", "8"], "Population sizes P (with 1).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per member and step.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per setting (median reported).")
_IMAGE_SHAPE = flags.DEFINE_list("image_shape", ["28", "28", "1"],
                                 "Synthetic image shape H,W,C (32,32,3: the CIFAR networks).")
_FORMULATIONS = flags.DEFINE_list("formulations", ["vmap", "unrolled"],
                                  "Population formulations to time (P = 1 unrolled always runs).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny run: lenet300100, P = 1, 2, batch 8.")
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  settings = {"model_names": _MODELS.value, "sizes": [int(s) for s in _SIZES.value],
              "batch_size": _BATCH_SIZE.value, "steps": _STEPS.value, "repeats": _REPEATS.value,
              "image_shape": [int(d) for d in _IMAGE_SHAPE.value],
              "formulations": _FORMULATIONS.value}
  try:
    record = population_suite.run_population_benchmark(
        **(population_suite.SMOKE_SETTINGS if _SMOKE.value else settings))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(population_suite.format_population_report(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
