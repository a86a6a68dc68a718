r"""Where one compiled benchmark function spends its time on XLA:CPU, by kind of op.

  PYTHONPATH=. .venv/bin/python experiments/profile_cpu_ops.py --model=resnet20_prospr \
      --input_shape=32,32,3 --function=train_step_masked

Compiles `--function` of experiments/benchmark.py's timing cases (random batches, k = --k, full
ProsPr's inner loop in form --unroll: True or a scan's steps per iteration), runs it
once to warm up, then --calls times under `jax.profiler`, and sums the duration of every XLA:CPU
op (thunk) in the trace per call, by kind of op (weight gradient, convolution, dot,
transpose/copy, other: `prospr_jax.benchmark.cpu_op_profile`). Op durations are thread times of
ops that may overlap on the cores, so the shares are meaningful and their sum is near, not equal
to, the wall time. Prints which CPU libraries the compiled program calls (YNNPACK, oneDNN
fusions: the effect of XLA_FLAGS), the shares, then the --top longest ops with their shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from prospr_jax.benchmark import (
    cpu_op_profile, result_record, setting_flags, time_to_mask)

_SETTING = setting_flags.define_setting_flags()
_FUNCTION = flags.DEFINE_string("function", "train_step_masked", "A benchmark timing case.")
_CALLS = flags.DEFINE_integer("calls", 3, "Profiled calls.")
_K = flags.DEFINE_integer("k", cpu_op_profile.K, "ProsPr's inner steps.")
_UNROLL = flags.DEFINE_string(
    "unroll", None, "Full ProsPr's inner loop: True (unrolled) or an int (a scan); default: "
    "the platform's.")
_TOP = flags.DEFINE_integer("top", 12, "Longest ops to list.")
_OUTPUT = setting_flags.define_output_flag()
_COMPILE_CACHE_DIR = setting_flags.define_compile_cache_flag()


def main(argv: Sequence[str]) -> None:
  setting_flags.begin(argv, _COMPILE_CACHE_DIR)
  setup = _SETTING.make_setup(num_batches=_K.value + 1)
  try:
    unroll = None if _UNROLL.value is None else time_to_mask.parse_unroll(_UNROLL.value)
  except ValueError as e:
    raise app.UsageError(f"--unroll: {e}") from None
  record = cpu_op_profile.profile_ops(setup, _SETTING.config(), _FUNCTION.value, _CALLS.value,
                                      _TOP.value, k=_K.value, unroll=unroll)
  print(cpu_op_profile.format_profile(record))
  if _OUTPUT.value:
    result_record.write_json(_OUTPUT.value, record)


if __name__ == "__main__":
  app.run(main)
