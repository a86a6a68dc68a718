"""The printed tables of a `cost_suite.run_benchmark` record."""

from __future__ import annotations

from typing import Any

from prospr_jax.benchmark.timing import BYTES_PER_MIB
from prospr_jax.experiment import provenance


def _memory_table(memory: dict[str, dict[str, dict]]) -> list[str]:
  """Lines of the ProsPr meta-gradient memory table of `cost_suite.measure_memory`'s results."""
  lines = ["ProsPr meta-gradient compiled memory (MiB); peak = argument + output + temp - alias;",
           "args hold params, state and the k + 1 input batches; ratio = peak / peak at the "
           "smallest k",
           f"{'k':>4}" + "".join(f"{h:>11}" for h in
                                 ("args", "temp", "peak", "ratio", "args(r)", "temp(r)",
                                  "peak(r)", "ratio(r)")) + "   (r) = remat=True"]
  for k in memory["remat"]:
    row = [f"{k:>4}"]
    for variant in ("no_remat", "remat"):
      s = memory[variant][k]
      row += [f"{s['argument'] / BYTES_PER_MIB:>11.2f}", f"{s['temp'] / BYTES_PER_MIB:>11.2f}",
              f"{s['peak'] / BYTES_PER_MIB:>11.2f}", f"{s['ratio']:>11.2f}"]
    lines.append("".join(row))
  return lines + [""]


def cell(value: float | None, fmt: str) -> str:
  """`value` formatted with `fmt`, or '-' for None (a side that was not measured)."""
  return "-" if value is None else format(value, fmt)


def _reference_table(comparison: dict[str, Any]) -> list[str]:
  """Lines of the side-by-side table of `reference_comparison.reference_comparison`."""
  env = comparison["environment"] or {}
  lines = [f"side by side with the reference (the authors' PyTorch code, torch "
           f"{env.get('torch', '-')}, {env.get('cpu_threads', '-')} CPU threads, "
           f"{env.get('gpu') or 'no GPU'})",
           f"{'':<30}{'reference ms':>14}{'prospr_jax ms':>15}{'prospr_jax / ref':>18}"]
  lines += [f"{r['function']:<30}{cell(r['reference_ms'], '.1f'):>14}"
            f"{r['jax_ms']:>15.1f}{cell(r['jax_over_reference'], '.2f'):>18}"
            for r in comparison["rows"]]
  steps = comparison["steps_per_full"]
  lines.append(f"{'full ProsPr / training step':<30}{cell(steps['reference'], '.2f'):>14}"
               f"{steps['jax']:>15.2f}")
  return lines + [""]


def format_report(results: dict[str, Any]) -> str:
  """Human-readable tables of a `cost_suite.run_benchmark` record."""
  cfg, dev = results["config"], results["device"]
  lines = [f"code: {provenance.describe_code_version(results['code'])}",
           f"device: {dev['device']}  kind: {dev['device_kind']}  platform: {dev['platform']}",
           f"model: {cfg['model']} ({cfg['num_params']:,} params)  batch: {cfg['batch_size']}  "
           f"input: {cfg['input_shape']}  repeats: {cfg['repeats']} (median after 1 warm-up)",
           "", f"{'function':<32}{'compile ms':>12}{'run ms':>12}{'peak MiB':>12}"]
  lines += [f"{name:<32}{t['compile_ms']:>12.1f}{t['run_ms']:>12.3f}{t['peak_mib']:>12.2f}"
            for name, t in results["times"].items()]
  lines += ["", f"{'run-time ratio':<50}{'value':>10}"]
  lines += [f"{name:<50}{value:>10.3f}" for name, value in results["ratios"].items()]
  lines.append("")
  if results["memory"]:
    lines += _memory_table(results["memory"])
  if results.get("reference"):
    lines += _reference_table(results["reference"])
  lines += [f"target {t['name']}: {t['value']:.3f} <= {t['limit']}: "
            f"{'met' if t['met'] else 'MISSED'}" for t in results["targets"]]
  return "\n".join(lines)
