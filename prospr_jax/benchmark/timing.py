"""How every benchmark times and sizes a function: compile time, interleaved median run time and
the compiled program's memory.

A measured function is jitted, lowered and compiled once (`compile_call`, which records the
seconds this takes); `interleaved_median_ms` then runs each function once as a warm-up and
`repeats` times more, the functions taking turns so that a change in background load hits all of
them alike, and reports the median wall time of one call with `jax.block_until_ready`.
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


def interleaved_median_ms(calls: Mapping[_Key, Callable[[], Any]], repeats: int
                          ) -> dict[_Key, float]:
  """Median wall time (ms) of each zero-argument call in `calls` over `repeats` runs.

  Each call runs once as a warm-up, then the calls take turns (one run each per round), so
  that a change in background load hits all of them alike and their ratios stay fair.
  """
  if repeats < 1:
    raise ValueError(f"Need repeats >= 1, got {repeats}.")
  for call in calls.values():
    jax.block_until_ready(call())
  times: dict[_Key, list[float]] = {key: [] for key in calls}
  for _ in range(repeats):
    for key, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[key].append(time.perf_counter() - start)
  return {key: 1e3 * statistics.median(t) for key, t in times.items()}


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
