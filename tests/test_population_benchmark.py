"""The population benchmark's smoke run: every setting measured, the single run its baseline."""

import math

import pytest

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


def test_one_formulation_keeps_the_single_run_baseline_and_unknown_ones_are_refused():
  settings = dict(population_suite.SMOKE_SETTINGS, sizes=(2,), formulations=("vmap",),
                  image_shape=(32, 32, 3))
  record = population_suite.run_population_benchmark(**settings)
  assert [(r["formulation"], r["size"]) for r in record["rows"]] == [("unrolled", 1),
                                                                     ("vmap", 2)]
  assert record["config"]["image_shape"] == [32, 32, 3]
  with pytest.raises(ValueError, match=r"Unknown formulations \['scan'\]"):
    population_suite.run_population_benchmark(**dict(settings, formulations=("scan",)))
