r"""What is live at the memory peak of ProsPr's remat meta-gradient on XLA:CPU, for several k.

  PYTHONPATH=. .venv/bin/python experiments/remat_memory_report.py --memory_ks=1,3,10,30 \
      > /tmp/report.txt && mv /tmp/report.txt docs/data/remat_memory_cpu.txt

For each k in --memory_ks, compiles experiments/benchmark.py's full ProsPr with `remat=True`
(by default SmallConvNet at 28x28x1, batch 128, as in docs/data/benchmark_cpu.txt's memory
table; --model, --input_shape and --batch_size choose another) and prints XLA's memory analysis
(argument and temp bytes, peak = argument + output + temp - alias), then a live-range
simulation of the optimized, scheduled entry computation: its peak, and the buffers live there,
grouped by result shape and by the JAX op that made them (`prospr_jax.benchmark.
remat_live_buffers` says what the simulation counts). The first line records the commit;
writing the report straight into a tracked file would mark the tree as changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import remat_live_buffers, result_record, setting_flags

_SETTING = setting_flags.define_setting_flags()
_MEMORY_KS = flags.DEFINE_list("memory_ks", ["1", "3", "10", "30"], "ProsPr inner steps k.")
_TOP = flags.DEFINE_integer("top", 12, "Groups of live buffers to list per k.")
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  ks = [int(k) for k in _MEMORY_KS.value]
  setup = _SETTING.make_setup(num_batches=max(ks) + 1)
  record = remat_live_buffers.remat_memory_report(setup, _SETTING.config(), ks, _TOP.value)
  print(remat_live_buffers.format_remat_report(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
