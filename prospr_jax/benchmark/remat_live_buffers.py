"""What is live at the memory peak of ProsPr's remat meta-gradient on XLA:CPU, for several k.

For each k, `remat_memory_report` compiles `cost_cases`' full ProsPr with `remat=True` and
records XLA's memory analysis (argument and temp bytes, peak = argument + output + temp -
alias), then a live-range simulation of the optimized, scheduled entry computation
(`Compiled.as_text()`): its peak, and the buffers live there, grouped by result shape and by
the JAX op that made them.

The simulation (`live_at_peak`) keeps each instruction's result from its definition to its last
use; bitcasts, tuples, get-tuple-element, `while` loops and calls alias their operands instead
of allocating; parameters and constants are not temporaries and count as nothing. It ignores
what runs inside loops and fusions and how XLA packs buffers into one temp allocation, so it
only approximates XLA's temp size (docs/data/remat_memory_cpu.txt: within 1.3 MiB of it, above
and below).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

from prospr_jax.benchmark import cost_cases, result_record, timing
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.benchmark.timing import BYTES_PER_MIB
from prospr_jax.experiment import provenance

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")
_ALIAS_OF_FIRST_OPERAND = ("bitcast", "while", "call")


@dataclasses.dataclass(frozen=True)
class Buffer:
  """One array result: `size` bytes, its `shape` text, the `instruction` and JAX `op_name`."""
  size: int
  shape: str
  instruction: str
  op_name: str


def _closing(text: str, start: int) -> int:
  """Index of the parenthesis that closes the one at `text[start]`."""
  depth = 0
  for i in range(start, len(text)):
    depth += {"(": 1, ")": -1}.get(text[i], 0)
    if depth == 0:
      return i
  raise ValueError(f"unbalanced parentheses in {text!r}")


def _arrays(type_text: str) -> list[tuple[str, int]]:
  """`(shape, bytes)` of every array in an HLO type (one, or a tuple's elements)."""
  out = []
  for dtype, dims in _ARRAY.findall(type_text):
    count = 1
    for d in filter(None, dims.split(",")):
      count *= int(d)
    out.append((f"{dtype}[{dims}]", count * _BYTES[dtype]))
  return out


def live_at_peak(hlo: str) -> tuple[int, list[Buffer]]:
  """Peak bytes of the simulated entry computation of `hlo` and the buffers live there.

  Every value is a list of buffer-id sets, one per tuple element (one for an array); an
  instruction uses the buffers of its result and its operands (a get-tuple-element only those
  of the element it takes).
  """
  entry = hlo[hlo.index("\nENTRY"):].split("\n")[1:]
  values: dict[str, list[set[int]]] = {}
  buffers: list[Buffer] = []
  uses: list[set[int]] = []  # buffers each instruction defines or reads, in schedule order
  for line in entry:
    m = re.match(r"\s*(?:ROOT )?%(\S+) = ", line)
    if not m:
      continue
    name, rest = m.group(1), line[m.end():]
    type_end = _closing(rest, 0) + 1 if rest.startswith("(") else rest.index(" ")
    type_text, rest = rest[:type_end], rest[type_end + 1:]
    opcode = rest[:rest.index("(")]
    operand_text = rest[rest.index("("):_closing(rest, rest.index("(")) + 1]
    operands = [values.get(o, [set()]) for o in re.findall(r"%([\w.\-]+)", operand_text)]
    op_name = re.search(r'op_name="([^"]*)"', line)
    if opcode in ("parameter", "constant"):
      value = [set()]
    elif opcode == "tuple":
      value = [set().union(*o) for o in operands]
    elif opcode == "get-tuple-element":
      index = int(re.search(r"index=(\d+)", line).group(1))
      value = [operands[0][index]]
    elif opcode in _ALIAS_OF_FIRST_OPERAND:
      value = operands[0]
    else:
      value = []
      for shape, size in _arrays(type_text):
        buffers.append(Buffer(size, shape, name, op_name.group(1) if op_name else ""))
        value.append({len(buffers) - 1})
    values[name] = value
    read = [] if opcode == "get-tuple-element" else [s for o in operands for s in o]
    uses.append(set().union(*value, *read))
  first: dict[int, int] = {}
  last: dict[int, int] = {}
  for t, ids in enumerate(uses):
    for b in ids:
      first.setdefault(b, t)
      last[b] = t
  delta = collections.Counter()
  for b, buffer in enumerate(buffers):
    delta[first[b]] += buffer.size
    delta[last[b] + 1] -= buffer.size
  live, peak, peak_t = 0, 0, 0
  for t in range(len(uses)):
    live += delta[t]
    if live > peak:
      peak, peak_t = live, t
  return peak, [buf for b, buf in enumerate(buffers) if first[b] <= peak_t <= last[b]]


def grouped(buffers: Sequence[Buffer], top: int) -> list[tuple[int, int, str, str]]:
  """The `top` largest `(bytes, count, shape, made by)` groups of `buffers`; 'made by' is the
  JAX op name below `jit(k_step_loss)`, or the HLO instruction where XLA made the buffer."""
  groups: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
  for buf in buffers:
    op = re.sub(r"^jit\(_prospr\)/jit\(k_step_loss\)/?", "", buf.op_name)
    group = groups[buf.shape, op or f"HLO {buf.instruction} (no JAX op below k_step_loss)"]
    group[0] += buf.size
    group[1] += 1
  rows = sorted(((size, n, shape, op) for (shape, op), (size, n) in groups.items()), reverse=True)
  return rows[:top]


def remat_memory_report(setup: Setup, config: dict[str, Any], memory_ks: Sequence[int],
                        top: int) -> dict[str, Any]:
  """A 'remat_live_buffers' `result_record` (`config` describes `setup`, which needs
  `max(memory_ks) + 1` batches): 'xla_flags' and 'per_k' `{str(k): {'xla': memory stats
  (bytes), 'simulated_peak': bytes, 'num_live': buffers live at the simulated peak, 'groups':
  the `top` largest [bytes, count, shape, made by] groups of them}}`."""
  if not memory_ks:
    raise ValueError("Need at least one k.")
  per_k = {}
  for k in memory_ks:
    call = cost_cases.compile_prospr(setup, k, remat=True)
    simulated, live = live_at_peak(call.executable.as_text())
    per_k[str(k)] = {"xla": timing.memory_stats(call.executable), "simulated_peak": simulated,
                     "num_live": len(live), "groups": [list(g) for g in grouped(live, top)]}
  return result_record.new_record(
      "remat_live_buffers", config | {"memory_ks": list(memory_ks), "top": top},
      xla_flags=os.environ.get("XLA_FLAGS", ""), per_k=per_k)


def format_remat_report(record: dict[str, Any]) -> str:
  """The printout of a `remat_memory_report` record: per k XLA's peak, the simulated peak and
  the live groups, then the peak ratios to the smallest k. Its first line records the commit."""
  cfg, per_k = record["config"], record["per_k"]
  lines = [f"code: {provenance.describe_code_version(record['code'])}; "
           f"jax {record['jax_version']} on {record['device']['platform']}; "
           f"XLA_FLAGS={record['xla_flags']!r}",
           # The input shape as the flag's strings, as in docs/data/remat_memory_cpu.txt.
           f"{cfg['model']}, batch {cfg['batch_size']}, input "
           f"{[str(d) for d in cfg['input_shape']]}, full ProsPr with remat=True"]
  for k, entry in per_k.items():
    stats = entry["xla"]
    lines += ["", f"k = {k}: XLA peak {stats['peak'] / BYTES_PER_MIB:.1f} MiB (arguments "
              f"{stats['argument'] / BYTES_PER_MIB:.1f}, temp {stats['temp'] / BYTES_PER_MIB:.1f});"
              f" simulated entry computation peak {entry['simulated_peak'] / BYTES_PER_MIB:.1f} "
              f"MiB, {entry['num_live']} buffers live there:",
              "       MiB  count  shape                 "
              "made by (under jit(_prospr)/jit(k_step_loss))"]
    lines += [f"  {size / BYTES_PER_MIB:8.2f}  {n:5d}  {shape:20s}  {op[:110]}"
              for size, n, shape, op in entry["groups"]]
  base = min(per_k, key=int)
  lines += ["", "peak ratios to k = %s: %s" % (base, ", ".join(
      f"k = {k}: {e['xla']['peak'] / per_k[base]['xla']['peak']:.3f}" for k, e in per_k.items()))]
  return "\n".join(lines)
