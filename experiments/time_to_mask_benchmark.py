r"""Time to a mask: full ProsPr's compile and run times for each form of its inner loop.

  PYTHONPATH=. .venv/bin/python experiments/time_to_mask_benchmark.py      # SmallConvNet
  PYTHONPATH=. .venv/bin/python experiments/time_to_mask_benchmark.py --model=resnet20_prospr \
      --input_shape=32,32,3 --ks=3

For each k in --ks (default 1,3,10,30) and each --unrolls form (True: the Python loop unrolled
at trace time; n: a `lax.scan` unrolling n steps per iteration), compiles full ProsPr at batch
--batch_size (default 128) on synthetic data and prints the compile time, the median run time
(the forms of one k take turns) and, unless --noremat_memory, the compiled peak memory of the
same program with `remat=True`; then, per k, the form with the shortest cold time to a mask
(compile + one run). `prospr_jax.saliency.prospr.default_unroll` is chosen from this table.
With --remat the timed programs are the remat ones. Each row also says how many CPU cores the
process kept busy while running.
The persistent compilation cache is off unless --compile_cache_dir is given, since the compile
times are what is measured (`prospr_jax.benchmark.time_to_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import result_record, setting_flags, time_to_mask

_SETTING = setting_flags.define_setting_flags()
_KS = flags.DEFINE_list("ks", [str(k) for k in time_to_mask.KS], "ProsPr inner steps k.")
_UNROLLS = flags.DEFINE_list(
    "unrolls", [str(u) for u in time_to_mask.UNROLLS],
    "Inner-loop forms: True (unrolled Python loop) or an int n >= 1 (scan, n steps unrolled).")
_REMAT_MEMORY = flags.DEFINE_bool("remat_memory", True,
                                  "Also compile with remat=True and print its peak memory.")
_REMAT = flags.DEFINE_bool("remat", False, "Time the programs compiled with remat=True.")
_REPEATS = setting_flags.define_repeats_flag()
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  ks = [int(k) for k in _KS.value]
  try:
    unrolls = [time_to_mask.parse_unroll(u) for u in _UNROLLS.value]
  except ValueError as e:
    raise app.UsageError(f"--unrolls: {e}") from None
  setup = _SETTING.make_setup(num_batches=max(ks) + 1)
  record = time_to_mask.run_time_to_mask(
      setup, _SETTING.config(), ks, unrolls, _REPEATS.value,
      _REMAT_MEMORY.value, _REMAT.value)
  print(time_to_mask.format_time_to_mask(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
