r"""Data-parallel training throughput: the same global batch on 1 device vs sharded over all.

On CPU, force several host devices (they share the machine's cores):

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python experiments/parallel_benchmark.py

Prints examples/s of one jitted masked training step both ways, measured interleaved in one
process, and their ratio (`prospr_jax.benchmark.parallel_suite`). On a multi-GPU/TPU host it
runs unchanged over the real devices.
"""

import json
from collections.abc import Sequence

import jax
from absl import app

from prospr_jax.benchmark import parallel_suite, result_record, setting_flags

_SETTING = setting_flags.define_setting_flags()  # --batch_size is the global batch
_REPEATS = setting_flags.define_repeats_flag()
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  print(f"devices: {jax.devices()}")
  record = parallel_suite.run_parallel_benchmark(
      _SETTING.model.value, _SETTING.batch_size.value, _SETTING.shape(), _REPEATS.value)
  print(json.dumps(record["throughput"], indent=2))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
