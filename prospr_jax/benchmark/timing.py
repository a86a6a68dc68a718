"""How every benchmark times and sizes a function: compile time, interleaved median run time and
the compiled program's memory.

A measured function is jitted, lowered and compiled once (`compile_call`, which records the
seconds this takes); `interleaved_timings` then runs each function once as a warm-up and
`repeats` times more, the functions taking turns so that a change in background load hits all of
them alike, and reports the median wall time of one call with `jax.block_until_ready` and the
CPU cores the process kept busy meanwhile.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import jax

BYTES_PER_MIB = 2**20

_Key = TypeVar("_Key", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class CompiledCall:
  """A compiled function bound to its arguments; calling it runs `executable(*args)`."""

  executable: jax.stages.Compiled
  args: tuple[Any, ...]
  compile_s: float  # seconds spent lowering and compiling

  def __call__(self) -> Any:
    return self.executable(*self.args)


def compile_call(jitted: Callable[..., Any], *args: Any) -> CompiledCall:
  """Lowers and compiles the jitted function `jitted` for `args`, timing it."""
  start = time.perf_counter()
  executable = jitted.lower(*args).compile()
  return CompiledCall(executable, args, time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class RunTiming:
  """One call's median wall time and how busy the process kept the CPU cores meanwhile."""

  ms: float  # median wall time of one call, milliseconds
  cores_busy: float  # process CPU seconds / wall seconds over all timed calls (all threads)


def interleaved_timings(calls: Mapping[_Key, Callable[[], Any]], repeats: int
                        ) -> dict[_Key, RunTiming]:
  """Median wall time of each zero-argument call in `calls` over `repeats` runs, and the CPU
  cores the process kept busy while it ran (`time.process_time` counts every thread: 2.0 on a
  2-core machine means both cores were busy throughout; on an accelerator it is the host's).

  Each call runs once as a warm-up, then the calls take turns (one run each per round), so
  that a change in background load hits all of them alike and their ratios stay fair.
  """
  if repeats < 1:
    raise ValueError(f"Need repeats >= 1, got {repeats}.")
  for call in calls.values():
    jax.block_until_ready(call())
  times: dict[_Key, list[float]] = {key: [] for key in calls}
  cpu: dict[_Key, float] = {key: 0.0 for key in calls}
  for _ in range(repeats):
    for key, call in calls.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(call())
      times[key].append(time.perf_counter() - start)
      cpu[key] += time.process_time() - start_cpu
  return {key: RunTiming(1e3 * statistics.median(t), cpu[key] / sum(t))
          for key, t in times.items()}


def interleaved_median_ms(calls: Mapping[_Key, Callable[[], Any]], repeats: int
                          ) -> dict[_Key, float]:
  """The median wall times (ms) of `interleaved_timings`."""
  return {key: t.ms for key, t in interleaved_timings(calls, repeats).items()}


def memory_stats(executable: jax.stages.Compiled) -> dict[str, int]:
  """Byte counts of `executable.memory_analysis()`: 'argument', 'output', 'temp', 'alias' and
  'peak' = argument + output + temp - alias."""
  analysis = executable.memory_analysis()
  if analysis is None:
    raise RuntimeError(f"The {jax.default_backend()} backend gives no compiled memory analysis.")
  names = ("argument", "output", "temp", "alias")
  stats = {n: int(getattr(analysis, f"{n}_size_in_bytes")) for n in names}
  stats["peak"] = stats["argument"] + stats["output"] + stats["temp"] - stats["alias"]
  return stats
