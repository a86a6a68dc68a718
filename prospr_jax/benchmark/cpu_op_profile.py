"""Where one compiled benchmark function spends its time on XLA:CPU, by kind of op.

`profile_ops` compiles one of `cost_cases.timing_cases` (random batches, k = 3 unless given, and
full ProsPr's inner loop in the given form), runs it once
to warm up, then `calls` times under `jax.profiler`, and sums the duration of every XLA:CPU op
(thunk) in the trace per call. Each op is put in one kind, from its optimized HLO:

  weight gradient   ops of the `while` loop of `conv_ops`' weight gradient (`_rhs_transpose`)
  scan slices       a dynamic slice or update, or a fusion around one: outside that loop, a
                    `lax.scan` (ProsPr's inner loop with `unroll=n`) reading a step's batch
                    and residuals from its stacked buffers, or writing them there
  convolution       a convolution, or a fusion around one (YNNPACK fuses BatchNorm/ReLU in)
  dot               a matrix product, or a fusion around one
  transpose/copy    a layout change: transpose, copy, pad, slice fusions
  other             everything else: BatchNorm statistics, ReLU masks, the SGD update, ...

Op durations are thread times of ops that may overlap on the cores, so the shares are
meaningful and their sum is near, not equal to, the wall time. The report names which CPU
libraries the compiled program calls (YNNPACK, oneDNN fusions: the effect of XLA_FLAGS), the
shares, then the longest ops with their shapes.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any

import jax

from prospr_jax.benchmark import cost_cases, result_record, timing
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.saliency import prospr

K = 3
"""ProsPr's inner steps in the profiled timing cases."""
_LAYOUT = ("transpose", "copy", "pad", "slice", "wrapped_copy")
_SCAN_SLICES = ("dynamic-slice", "dynamic-update-slice")
"""Ops that read a step's slice of a scan's stacked inputs and residuals or write it."""


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
    if op_name and re.search(r"/conv\w*/while", op_name.group(1)):
      kind = "weight gradient"
    elif opcode in _SCAN_SLICES or any(f" {op}(" in body for op in _SCAN_SLICES):
      kind = "scan slices"
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


def _trace_events(call: timing.CompiledCall, calls: int) -> list[dict]:
  """The trace events of `calls` runs of `call` under `jax.profiler`."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(calls):
      jax.block_until_ready(call())
    jax.profiler.stop_trace()
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  return events["traceEvents"] if isinstance(events, dict) else events


def profile_ops(setup: Setup, config: dict[str, Any], function: str, calls: int, top: int,
                k: int = K, unroll: prospr.Unroll | None = None) -> dict[str, Any]:
  """A 'cpu_op_profile' `result_record` of timing case `function` (`config` describes `setup`)
  at `k` inner steps, full ProsPr's inner loop in form `unroll` (None: the default).

  Measurements: 'xla_flags', 'library_fusions' (`{fusion kind: count}` in the optimized HLO),
  'num_convolutions', 'total_ms' (op thread time per call, the mean of `calls`), 'per_kind_ms'
  (`[[kind, ms]]`, longest first) and 'longest_ops' (the `top` longest
  `{'name', 'ms', 'kind', 'shape'}`).
  """
  cases = cost_cases.timing_cases(setup, [k], unroll=unroll)
  if function not in cases:
    raise ValueError(f"Unknown timing case {function!r}; expected one of {sorted(cases)}.")
  fn, args = cases[function]
  call = timing.compile_call(fn, *args)
  jax.block_until_ready(call())
  hlo = call.executable.as_text()
  kinds = op_kinds(hlo)
  per_op = collections.Counter()
  for e in _trace_events(call, calls):
    if e.get("ph") == "X" and e.get("name") in kinds:
      per_op[e["name"]] += e["dur"] / 1e3 / calls  # ms per call
  per_kind = collections.Counter()
  for name, ms in per_op.items():
    per_kind[kinds[name][0]] += ms
  return result_record.new_record(
      "cpu_op_profile",
      config | {"function": function, "k": k, "unroll": unroll, "calls": calls, "top": top},
      xla_flags=os.environ.get("XLA_FLAGS", ""),
      library_fusions=dict(collections.Counter(re.findall(r'"kind":"(__\w+_fusion)"', hlo))),
      num_convolutions=hlo.count(" convolution("), total_ms=sum(per_kind.values()),
      per_kind_ms=[[kind, ms] for kind, ms in per_kind.most_common()],
      longest_ops=[{"name": name, "ms": ms, "kind": kinds[name][0], "shape": kinds[name][1]}
                   for name, ms in per_op.most_common(top)])


def format_profile(record: dict[str, Any]) -> str:
  """The libraries, the shares per kind of op and the longest ops of a `profile_ops` record."""
  cfg, total = record["config"], record["total_ms"]
  lines = [f"XLA_FLAGS={record['xla_flags']!r}: library fusions {record['library_fusions']}, "
           f"{record['num_convolutions']} convolutions in the optimized HLO",
           f"{cfg['model']} {cfg['function']}, batch {cfg['batch_size']}: op thread time "
           f"{total:.1f} ms per call (mean of {cfg['calls']})"]
  lines += [f"  {kind:16s} {ms:9.1f} ms  {100 * ms / total:5.1f}%"
            for kind, ms in record["per_kind_ms"]]
  lines.append(f"longest {cfg['top']} ops (ms per call, result shape):")
  lines += [f"  {op['ms']:8.2f}  {op['kind']:16s} {op['shape']:28s} {op['name']}"
            for op in record["longest_ops"]]
  return "\n".join(lines)
