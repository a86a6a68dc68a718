r"""What is live at the memory peak of ProsPr's remat meta-gradient on XLA:CPU, for several k.

  PYTHONPATH=. .venv/bin/python scripts/remat_memory_report.py --memory_ks=1,3,10,30 \
      > /tmp/report.txt && mv /tmp/report.txt docs/data/remat_memory_cpu.txt

For each k in --memory_ks, compiles experiments/benchmark.py's full ProsPr with `remat=True`
(by default SmallConvNet at 28x28x1, batch 128, as in docs/data/benchmark_cpu.txt's memory table;
--model, --input_shape and --batch_size choose another) and prints XLA's memory analysis
(argument and temp bytes, peak = argument + output + temp - alias), then a live-range
simulation of the optimized, scheduled entry computation (`Compiled.as_text()`): its peak, and
the buffers live there, grouped by result shape and by the JAX op that made them.

The simulation keeps each instruction's result from its definition to its last use; bitcasts,
tuples, get-tuple-element, `while` loops and calls alias their operands instead of allocating;
parameters and constants are not temporaries and count as nothing. It ignores what runs inside
loops and fusions and how XLA packs buffers into one temp allocation, so it only approximates
XLA's temp size (docs/data/remat_memory_cpu.txt: within 1.3 MiB of it, above and below). The first
line records the commit; writing the report straight into a tracked file would mark the tree as
changed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import sys
from collections.abc import Sequence

import jax
from absl import app, flags

from prospr_jax.experiment import provenance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS  # --model, --input_shape, --batch_size and --memory_ks are benchmark.py's
_TOP = flags.DEFINE_integer("top", 12, "Groups of live buffers to list per k.")

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


def _grouped(buffers: Sequence[Buffer], top: int) -> list[tuple[int, int, str, str]]:
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


def main(argv: Sequence[str]) -> None:
  del argv
  ks = [int(k) for k in FLAGS.memory_ks]
  setup = benchmark.make_setup(FLAGS.model, FLAGS.batch_size,
                               tuple(int(s) for s in FLAGS.input_shape), 10,
                               num_batches=max(ks) + 1)
  mib = 2.0**20
  print(f"code: {provenance.describe_code_version(provenance.code_version())}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"{FLAGS.model}, batch {FLAGS.batch_size}, input {FLAGS.input_shape}, full ProsPr with "
        f"remat=True")
  peaks = {}
  for k in ks:
    compiled, _ = benchmark.compile_fn(benchmark.prospr_fn(setup, k, remat=True),
                                       *benchmark.prospr_args(setup, k))
    stats = benchmark.memory_stats(compiled)
    peaks[k] = stats["peak"]
    simulated, live = live_at_peak(compiled.as_text())
    print(f"\nk = {k}: XLA peak {stats['peak'] / mib:.1f} MiB (arguments "
          f"{stats['argument'] / mib:.1f}, temp {stats['temp'] / mib:.1f}); simulated entry "
          f"computation peak {simulated / mib:.1f} MiB, {len(live)} buffers live there:")
    print("       MiB  count  shape                 made by (under jit(_prospr)/jit(k_step_loss))")
    for size, n, shape, op in _grouped(live, _TOP.value):
      print(f"  {size / mib:8.2f}  {n:5d}  {shape:20s}  {op[:110]}")
  base = min(ks)
  print("\npeak ratios to k = %d: %s" % (
      base, ", ".join(f"k = {k}: {peaks[k] / peaks[base]:.3f}" for k in ks)))


if __name__ == "__main__":
  app.run(main)
