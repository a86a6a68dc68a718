"""Smoke test of experiments/benchmark.py: runs its measurements in-process (no timing asserts)."""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py"


def _load_benchmark():
  """Imports experiments/benchmark.py once (experiments/ is not a package; its absl flags
  can only be defined once per process)."""
  name = "prospr_benchmark"
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
  return sys.modules[name]


@pytest.fixture(scope="module")
def benchmark():
  return _load_benchmark()


@pytest.fixture(scope="module")
def results(benchmark):
  return benchmark.run_benchmark(**benchmark.SMOKE_SETTINGS)


def _positive_finite(x) -> bool:
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_every_time_and_ratio_is_positive_and_finite(results):
  ks = results["config"]["ks"]
  expected_times = {"train_step_masked", "train_step_dense", "snip",
                    *(f"prospr_k{k}" for k in ks), f"prospr_first_order_k{max(ks)}"}
  assert set(results["times"]) == expected_times
  for name, t in results["times"].items():
    assert _positive_finite(t["compile_ms"]), name
    assert _positive_finite(t["run_ms"]), name
  assert len(results["ratios"]) == len(ks) + 3
  for name, ratio in results["ratios"].items():
    assert _positive_finite(ratio), name


def test_memory_ratios_for_each_k(results, benchmark):
  memory_ks = [str(k) for k in benchmark.SMOKE_SETTINGS["memory_ks"]]
  for variant in ("remat", "no_remat"):
    table = results["memory"][variant]
    assert list(table) == memory_ks
    for k, stats in table.items():
      assert _positive_finite(stats["ratio"]), (variant, k)
      assert stats["peak"] > 0 and stats["argument"] > 0
    assert table[memory_ks[0]]["ratio"] == 1.0
  # Whether remat saves memory is tested on a conv net in
  # tests/test_prospr.py::test_remat_keeps_memory_nearly_flat_in_k; in this tiny,
  # parameter-dominated smoke setting the stored step inputs outweigh the activations.


def test_results_are_json_and_report_lists_every_target(results, benchmark):
  assert json.loads(json.dumps(results)) == results
  assert [t["name"] for t in results["targets"]] and all(
      isinstance(t["met"], bool) for t in results["targets"])
  report = benchmark.format_report(results)
  assert report.count("target ") == len(results["targets"]) == 3
  assert results["device"]["device_kind"] in report
