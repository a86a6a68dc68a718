"""The printed tables of a `gpu_suite.run_suite` record: prospr_jax beside the reference."""

from __future__ import annotations

from typing import Any

from prospr_jax.benchmark.cost_cases import reference_k
from prospr_jax.benchmark.cost_report import cell, format_report


def _find(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
  """The first record whose items include `fields`."""
  return next((r for r in records if all(r.get(k) == v for k, v in fields.items())), None)


def _jax_ms(runs: list[dict[str, Any]], preset: str, batch_size: int, remat: bool,
            name: str) -> float | None:
  """prospr_jax's run time (ms) of timing case `name`, or None if not measured."""
  run = _find(runs, preset=preset, batch_size=batch_size, remat=remat)
  return run["results"]["times"].get(name, {}).get("run_ms") if run and "results" in run else None


def _ref_ms(jobs: list[dict[str, Any]], **fields: Any) -> float | None:
  """The reference's run time (ms) of the job with `fields`, or None if not measured."""
  job = _find(jobs, **fields)
  return job.get("run_ms") if job else None


def comparison_rows(suite: dict[str, Any]) -> list[dict[str, Any]]:
  """Side-by-side rows per preset, batch size and function: prospr_jax (without and with remat)
  and the reference on the accelerator, ms, with `ref / jax` (above 1: prospr_jax is faster)."""
  cfg, runs, jobs = suite["config"], suite["prospr_jax"], suite["reference"]["jobs"]
  k_ref = reference_k(cfg["ks"])
  functions = [("train step (masked)", "train_step_masked", None, {"kind": "train_step"})]
  functions += [(f"full ProsPr k={k}", f"prospr_k{k}", f"prospr_k{k}_remat",
                 {"kind": "prospr", "method": "full", "k": k, "published": False})
                for k in cfg["ks"]]
  functions.append((f"first-order ProsPr k={k_ref}", f"prospr_first_order_k{k_ref}", None,
                    {"kind": "prospr", "method": "first_order", "k": k_ref}))
  rows = []
  for batch_size in cfg["batch_sizes"]:
    for preset in cfg["presets"]:
      for label, name, remat_name, ref_fields in functions:
        jax_ms = _jax_ms(runs, preset, batch_size, False, name)
        ref_ms = _ref_ms(jobs, preset=preset, batch_size=batch_size, **ref_fields)
        remat_ms = remat_name and _jax_ms(runs, preset, batch_size, True, remat_name)
        rows.append({"preset": preset, "batch_size": batch_size, "function": label,
                     "jax_ms": jax_ms, "jax_remat_ms": remat_ms, "reference_ms": ref_ms,
                     "ref_over_jax": ref_ms / jax_ms if ref_ms and jax_ms else None})
  return rows


def published_cpu_row(suite: dict[str, Any]) -> dict[str, Any] | None:
  """The reference's published full mode (CPU) against prospr_jax's full ProsPr (same setting,
  on the accelerator): `{'preset', 'batch_size', 'k', 'reference_ms', 'jax_ms', 'ref_over_jax'}`."""
  job = _find(suite["reference"]["jobs"], kind="prospr", method="full", published=True)
  if job is None:
    return None
  jax_ms = _jax_ms(suite["prospr_jax"], job["preset"], job["batch_size"], False,
                   f"prospr_k{job['k']}")
  ref_ms = job.get("run_ms")
  return {"preset": job["preset"], "batch_size": job["batch_size"], "k": job["k"],
          "reference_ms": ref_ms, "jax_ms": jax_ms,
          "ref_over_jax": ref_ms / jax_ms if ref_ms and jax_ms else None}


def _describe(job: dict[str, Any]) -> str:
  """A reference job in one line."""
  keys = ("preset", "batch_size", "kind", "method", "k", "published")
  return " ".join(f"{k}={job[k]}" for k in keys if k in job)


def format_summary(suite: dict[str, Any]) -> str:
  """The side-by-side table, the published-CPU comparison, what was skipped or failed, and each
  prospr_jax configuration's `cost_report.format_report`."""
  env = suite["reference"]["environment"] or {}
  lines = [f"prospr_jax: jax {suite['jax_version']} on {suite['device']['device_kind']} "
           f"({suite['device']['platform']}); reference: torch {env.get('torch', '-')} on "
           f"{env.get('gpu') or 'cpu'}; median of {suite['config']['repeats']} after a warm-up; "
           f"{suite['elapsed_s']:.0f} s of a {suite['config']['budget_s']:.0f} s budget",
           "ref ms: the authors' code there, full mode kept there (not moved to the CPU), "
           "first-order as published; ref/jax > 1: prospr_jax is faster",
           "", f"{'setting':<22}{'batch':>6}  {'function':<24}{'jax ms':>11}{'jax remat ms':>14}"
           f"{'ref ms':>12}{'ref/jax':>9}"]
  lines += [f"{r['preset']:<22}{r['batch_size']:>6}  {r['function']:<24}"
            f"{cell(r['jax_ms'], '.2f'):>11}{cell(r['jax_remat_ms'], '.2f'):>14}"
            f"{cell(r['reference_ms'], '.2f'):>12}{cell(r['ref_over_jax'], '.2f'):>9}"
            for r in comparison_rows(suite)]
  published = published_cpu_row(suite)
  if published:
    lines += ["", f"reference's published full mode (moves to the CPU), {published['preset']} "
              f"batch {published['batch_size']} k={published['k']}: "
              f"{cell(published['reference_ms'], '.1f')} ms = "
              f"{cell(published['ref_over_jax'], '.1f')} x prospr_jax's full ProsPr "
              f"({cell(published['jax_ms'], '.2f')} ms)"]
  problems = [f"reference: {suite['reference']['error']}"] if suite["reference"]["error"] else []
  problems += [f"reference {_describe(j)}: {j.get('error') or 'skipped (budget)'}"
               for j in suite["reference"]["jobs"] if "run_ms" not in j]
  problems += [f"prospr_jax {r['preset']} batch {r['batch_size']} remat={r['remat']}: "
               f"{r.get('error') or 'skipped (budget)'}"
               for r in suite["prospr_jax"] if "results" not in r]
  lines += ["", *problems] if problems else []
  for run in suite["prospr_jax"]:
    if "results" in run:
      lines += ["", f"=== {run['preset']}, remat={run['remat']} ===",
                format_report(run["results"])]
  return "\n".join(lines)
