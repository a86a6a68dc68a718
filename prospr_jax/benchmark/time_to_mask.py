"""Time to a mask: full ProsPr's compile time and run time for each form of its inner loop.

`run_time_to_mask` compiles full ProsPr (`prospr_scores` jitted, the library's default inner
SGD) for every k in `ks` and every `unroll` in `unrolls` (True: the Python loop unrolled at
trace time; n: a `lax.scan` unrolling n steps per iteration), and records the compile time
(tracing, lowering and XLA compilation), the interleaved median run time of the unroll forms of
each k (`timing.interleaved_median_ms`) and, optionally, the compiled peak memory of the same
program with `remat=True`. A pruning run compiles once and runs once, so its time to a mask is
compile + run; with a warm persistent compilation cache it is the run alone. What
`prospr.default_unroll` picks per platform comes from this suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from prospr_jax.benchmark import cost_cases, result_record, timing
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.saliency import prospr

KS = (1, 3, 10, 30)
"""Inner steps measured by default."""
UNROLLS: tuple[prospr.Unroll, ...] = (True, 1, 2)
"""Inner-loop forms measured by default: unrolled, a scan, a scan unrolling 2 steps."""


def parse_unroll(text: str) -> prospr.Unroll:
  """A command-line inner-loop form: 'True' -> True, '2' -> 2 (checked by
  `prospr.check_unroll`); ValueError for anything else."""
  if text == "True":
    return True
  try:
    return prospr.check_unroll(int(text))
  except (TypeError, ValueError) as e:
    raise ValueError(f"An inner-loop form is True or an integer >= 1, not {text!r}.") from e


def _warm_up(setup: Setup) -> None:
  """Compiles and runs the loss once, so that one-time costs (backend start, first tracing of
  the model) are not charged to the first measured program."""
  loss = jax.jit(lambda params, state, batch: setup.loss_fn(params, state, batch)[0])
  jax.block_until_ready(loss(setup.params, setup.state, setup.batches[0]))


def measure_k(setup: Setup, k: int, unrolls: Sequence[prospr.Unroll], repeats: int,
              remat_memory: bool, remat: bool = False) -> list[dict[str, Any]]:
  """One row per unroll form at `k` inner steps: {'k', 'unroll', 'remat', 'compile_s',
  'run_ms', 'cores_busy'} of the programs compiled with `remat` and, with `remat_memory`,
  'remat_peak_mib' (compiled peak of the remat program, MiB)."""
  args = cost_cases.prospr_args(setup, k)
  # Keyed by position: True == 1 as a dict key.
  compiled = {i: timing.compile_call(cost_cases.prospr_fn(setup, k, remat=remat, unroll=u),
                                     *args)
              for i, u in enumerate(unrolls)}
  runs = timing.interleaved_timings(compiled, repeats)
  rows = []
  for i, unroll in enumerate(unrolls):
    row = {"k": k, "unroll": unroll, "remat": remat, "compile_s": compiled[i].compile_s,
           "run_ms": runs[i].ms, "cores_busy": runs[i].cores_busy}
    if remat_memory:
      program = compiled[i] if remat else timing.compile_call(
          cost_cases.prospr_fn(setup, k, remat=True, unroll=unroll), *args)
      row["remat_peak_mib"] = (timing.memory_stats(program.executable)["peak"]
                               / timing.BYTES_PER_MIB)
    rows.append(row)
  return rows


def run_time_to_mask(setup: Setup, config: dict[str, Any], ks: Sequence[int] = KS,
                     unrolls: Sequence[prospr.Unroll] = UNROLLS, repeats: int = 5,
                     remat_memory: bool = True, remat: bool = False) -> dict[str, Any]:
  """A 'time_to_mask' `result_record` (`config` describes `setup`, which needs max(ks) + 1
  batches) whose 'rows' hold `measure_k`'s rows for every k in `ks`, in order; the timed
  programs are compiled with `remat`."""
  if len(setup.batches) < max(ks) + 1:
    raise ValueError(f"k = {max(ks)} needs {max(ks) + 1} batches; the setup has "
                     f"{len(setup.batches)}.")
  for unroll in unrolls:
    prospr.check_unroll(unroll)
  _warm_up(setup)
  rows = [row for k in ks
          for row in measure_k(setup, k, unrolls, repeats, remat_memory, remat)]
  return result_record.new_record(
      "time_to_mask", config | {"ks": list(ks), "unrolls": list(unrolls), "repeats": repeats,
                                "remat": remat},
      rows=rows)


def format_time_to_mask(record: dict[str, Any]) -> str:
  """A table of a `run_time_to_mask` record: one line per (k, unroll), then per k the form
  with the shortest cold time to a mask (compile + one run)."""
  cfg = record["config"]
  lines = [f"{cfg['model']}, batch {cfg['batch_size']}, {record['device']['device_kind']}: "
           f"full ProsPr{' with remat' if cfg['remat'] else ''} (compile = trace + lower + "
           f"XLA; run = median of {cfg['repeats']}; cores = CPU cores busy while running)"]
  for row in record["rows"]:
    memory = (f", remat peak {row['remat_peak_mib']:8.1f} MiB"
              if "remat_peak_mib" in row else "")
    lines.append(f"  k={row['k']:3d} unroll={str(row['unroll']):5s}: compile "
                 f"{row['compile_s']:7.2f} s, run {row['run_ms']:9.2f} ms, cores "
                 f"{row['cores_busy']:.2f}{memory}")
  for k in cfg["ks"]:
    at_k = [row for row in record["rows"] if row["k"] == k]
    best = min(at_k, key=lambda row: row["compile_s"] + row["run_ms"] / 1e3)
    lines.append(f"  k={k:3d}: shortest cold time to a mask with unroll={best['unroll']}")
  return "\n".join(lines)
