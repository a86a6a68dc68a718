r"""Where one compiled benchmark function spends its time on XLA:CPU, by kind of op.

  PYTHONPATH=. .venv/bin/python scripts/profile_cpu_ops.py --model=resnet20_prospr \
      --input_shape=32,32,3 --function=train_step_masked

Compiles `--function` of experiments/benchmark.py's timing cases (random batches, k = 3), runs it
once to warm up, then --calls times under `jax.profiler`, and sums the duration of every XLA:CPU
op (thunk) in the trace per call. Each op is put in one kind, from its optimized HLO:

  weight gradient   ops of a `while` loop: `conv_ops`' weight gradient (`_rhs_transpose`)
  convolution       a convolution, or a fusion around one (YNNPACK fuses BatchNorm/ReLU in)
  dot               a matrix product, or a fusion around one
  transpose/copy    a layout change: transpose, copy, pad, slice fusions
  other             everything else: BatchNorm statistics, ReLU masks, the SGD update, ...

Op durations are thread times of ops that may overlap on the 2 cores, so the shares are
meaningful and their sum is near, not equal to, the wall time. Prints which CPU libraries the
compiled program calls (YNNPACK, oneDNN fusions: the effect of XLA_FLAGS), the shares, then the
--top longest ops with their shapes.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence

import jax
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS  # --model, --input_shape and --batch_size are benchmark.py's
_FUNCTION = flags.DEFINE_string("function", "train_step_masked", "A benchmark timing case.")
_CALLS = flags.DEFINE_integer("calls", 3, "Profiled calls.")
_TOP = flags.DEFINE_integer("top", 12, "Longest ops to list.")

_LAYOUT = ("transpose", "copy", "pad", "slice", "dynamic-slice", "wrapped_copy")


def op_kinds(hlo: str) -> dict[str, tuple[str, str]]:
  """Maps each instruction name of optimized `hlo` text to `(kind, result shape)`."""
  computations: dict[str, str] = {}
  for block in re.split(r"\n(?=\S)", hlo):
    header = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
    if header:
      computations[header.group(1)] = block
  kinds = {}
  for m in re.finditer(r"%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)", hlo):
    name, shape, opcode, rest = m.groups()
    if opcode == "while":  # its body's ops are traced (and counted) one by one
      continue
    op_name = re.search(r'op_name="([^"]*)"', rest)
    called = re.search(r"calls=%([\w.\-]+)", rest)
    body = computations.get(called.group(1), "") if called else ""
    if op_name and "while" in op_name.group(1):
      kind = "weight gradient"
    elif opcode == "convolution" or " convolution(" in body:
      kind = "convolution"
    elif opcode == "dot" or " dot(" in body:
      kind = "dot"
    elif opcode in ("copy", "transpose", "pad", "slice") or name.startswith(_LAYOUT):
      kind = "transpose/copy"
    else:
      kind = "other"
    kinds[name] = (kind, shape.split("{")[0])
  return kinds


def main(argv: Sequence[str]) -> None:
  del argv
  setup = benchmark.make_setup(FLAGS.model, FLAGS.batch_size,
                               tuple(int(s) for s in FLAGS.input_shape), 10, num_batches=4)
  fn, args = benchmark.timing_cases(setup, [3])[_FUNCTION.value]
  compiled = fn.lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  hlo = compiled.as_text()
  kinds = op_kinds(hlo)
  libraries = collections.Counter(re.findall(r'"kind":"(__\w+_fusion)"', hlo))
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: library fusions {dict(libraries)}, "
        f"{hlo.count(' convolution(')} convolutions in the optimized HLO")
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(_CALLS.value):
      jax.block_until_ready(compiled(*args))
    jax.profiler.stop_trace()
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  per_op = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in kinds:
      per_op[e["name"]] += e["dur"] / 1e3 / _CALLS.value  # ms per call
  per_kind = collections.Counter()
  for name, ms in per_op.items():
    per_kind[kinds[name][0]] += ms
  total = sum(per_kind.values())
  print(f"{FLAGS.model} {_FUNCTION.value}, batch {FLAGS.batch_size}: op thread time "
        f"{total:.1f} ms per call (mean of {_CALLS.value})")
  for kind, ms in per_kind.most_common():
    print(f"  {kind:16s} {ms:9.1f} ms  {100 * ms / total:5.1f}%")
  print(f"longest {_TOP.value} ops (ms per call, result shape):")
  for name, ms in per_op.most_common(_TOP.value):
    print(f"  {ms:8.2f}  {kinds[name][0]:16s} {kinds[name][1]:28s} {name}")


if __name__ == "__main__":
  app.run(main)
