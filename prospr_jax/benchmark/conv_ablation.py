"""Ablation of `prospr_jax.ops.conv_ops` on one zoo setting, all variants side by side in one
process.

Variants (`conv_variants`; selected at trace time, each compiled from a fresh trace): `lax`
(every conv `lax.conv_general_dilated`), `conv_wgrad` (`conv_ops` with the weight gradient as
one convolution) and `conv_ops` as shipped. For the masked training step, full ProsPr and
first-order ProsPr at k (`cost_cases`' functions and random batches) it measures each
variant's largest score difference from the first variant's (per leaf, relative to that leaf's
largest score), the median run time of interleaved repetitions, the compile times, and the
compiled peak memory of remat ProsPr at k = 1 and `memory_k`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from prospr_jax.benchmark import conv_variants, cost_cases, result_record, timing
from prospr_jax.benchmark.synthetic_setup import Setup
from prospr_jax.benchmark.timing import BYTES_PER_MIB


def _print_now(line: str) -> None:
  print(line, flush=True)


def case_names(k: int) -> list[str]:
  """The timing cases compared: masked training step, full and first-order ProsPr at `k`."""
  return ["train_step_masked", f"prospr_k{k}", f"prospr_first_order_k{k}"]


def _compile_variant(setup: Setup, variant: str, k: int, log: Callable[[str], None]
                     ) -> dict[str, timing.CompiledCall]:
  """`case_names(k)` compiled with the conv `variant`, from a fresh trace."""
  jax.clear_caches()  # the library's jits are module-level: never reuse another variant's trace
  conv_variants.use(variant)
  cases = cost_cases.timing_cases(setup, [k])
  calls = {}
  for name in case_names(k):
    fn, args = cases[name]
    calls[name] = timing.compile_call(fn, *args)
    log(f"compiled {name} ({variant}) in {calls[name].compile_s:.1f} s")
  return calls


def run_ablation(setup: Setup, config: dict[str, Any], variants: Sequence[str], k: int,
                 memory_k: int, repeats: int,
                 log: Callable[[str], None] = _print_now) -> dict[str, Any]:
  """A 'conv_ops_ablation' `result_record` (`config` describes `setup`) with, per case name
  and variant: 'run_ms', 'compile_s' and 'score_difference' (vs `variants[0]`, ProsPr cases
  only); and 'remat_peak_mib' `{variant: [peak at k = 1, peak at memory_k]}` (`{}` for
  `memory_k` 0). `log` gets a line after each compile."""
  if not variants:
    raise ValueError("Need at least one conv variant.")
  calls: dict[tuple[str, str], timing.CompiledCall] = {}
  memory = {}
  for variant in variants:
    for name, call in _compile_variant(setup, variant, k, log).items():
      calls[(name, variant)] = call
    if memory_k:
      memory[variant] = [timing.memory_stats(cost_cases.compile_prospr(
          setup, m, remat=True).executable)["peak"] / BYTES_PER_MIB for m in (1, memory_k)]
  conv_variants.use("conv_ops")
  names = case_names(k)
  differences: dict[str, dict[str, float]] = {}
  for name in names[1:]:
    first = jax.tree.leaves(calls[(name, variants[0])]())
    differences[name] = {
        variant: conv_variants.largest_relative_difference(
            first, jax.tree.leaves(calls[(name, variant)]()))
        for variant in variants[1:]}
  run = timing.interleaved_median_ms(calls, repeats)
  per_case = lambda value: {name: {v: value(name, v) for v in variants}  # noqa: E731
                            for name in names}
  return result_record.new_record(
      "conv_ops_ablation",
      config | {"variants": list(variants), "k": k, "memory_k": memory_k, "repeats": repeats},
      run_ms=per_case(lambda n, v: run[(n, v)]),
      compile_s=per_case(lambda n, v: calls[(n, v)].compile_s),
      score_difference=differences, remat_peak_mib=memory)


def format_ablation(record: dict[str, Any]) -> str:
  """The score differences, then the table of run and compile times and remat memory."""
  cfg = record["config"]
  variants, run, compile_s = cfg["variants"], record["run_ms"], record["compile_s"]
  names = list(run)
  lines = [f"{name}: {variant} vs {variants[0]}: largest |difference| / largest |score| of a "
           f"leaf = {difference:.2e}"
           for name, per_variant in record["score_difference"].items()
           for variant, difference in per_variant.items()]
  lines += ["", f"{cfg['model']}, batch {cfg['batch_size']}, run: median of {cfg['repeats']} "
            f"(ms); compile (s)", f"{'':30s}" + "".join(f"{v:>12s}" for v in variants)]
  lines += [f"{name:30s}" + "".join(f"{run[name][v]:12.1f}" for v in variants) for name in names]
  lines.append(f"{'full ProsPr / train step':30s}"
               + "".join(f"{run[names[1]][v] / run[names[0]][v]:12.2f}" for v in variants))
  lines += [f"{'compile ' + name:30s}" + "".join(f"{compile_s[name][v]:12.1f}" for v in variants)
            for name in names]
  memory = record["remat_peak_mib"]
  if memory:
    m = cfg["memory_k"]
    lines.append(f"{f'remat peak MiB k=1 / k={m}':30s}"
                 + "".join(f"{f'{memory[v][0]:.0f}/{memory[v][1]:.0f}':>12s}" for v in variants))
    lines.append(f"{f'remat peak k={m} / k=1':30s}"
                 + "".join(f"{memory[v][1] / memory[v][0]:12.2f}" for v in variants))
  return "\n".join(lines)
