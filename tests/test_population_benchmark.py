"""The population benchmark's smoke run: every setting measured, the single run its baseline."""

import math

from prospr_jax.benchmark import population_suite


def test_smoke_run_measures_every_setting_against_the_single_run():
  record = population_suite.run_population_benchmark(**population_suite.SMOKE_SETTINGS)
  rows = {(r["formulation"], r["size"]): r for r in record["rows"]}
  assert set(rows) == {(f, p) for f in ("vmap", "unrolled") for p in (1, 2)}
  assert rows[("unrolled", 1)]["vs_single_run"] == 1.0
  for row in rows.values():
    for key in ("compile_s", "ms_per_step", "member_steps_per_s", "vs_single_run",
                "peak_mib_per_member"):
      assert math.isfinite(row[key]) and row[key] > 0, (row, key)
  assert record["benchmark"] == "population" and record["code"] is not None
  assert "member steps/s" in population_suite.format_population_report(record)
