"""Smoke test of the ProsPr cost suite (`prospr_jax.benchmark.cost_suite`, run by
experiments/benchmark.py): runs its measurements in-process (no timing asserts)."""

import json
import math
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from prospr_jax import models
from prospr_jax.benchmark import cost_report, cost_suite, result_record, timing
from prospr_jax.benchmark.reference_comparison import reference_comparison
from prospr_jax.benchmark.synthetic_setup import PRESETS
from prospr_jax.experiment import provenance

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(*args: str) -> subprocess.CompletedProcess:
  """Runs `python args` in the repository root with it on PYTHONPATH."""
  env = {**os.environ, "PYTHONPATH": str(_ROOT)}
  return subprocess.run([sys.executable, *args], cwd=_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def results():
  return cost_suite.run_benchmark(**cost_suite.SMOKE_SETTINGS)


def _positive_finite(x) -> bool:
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_every_time_and_ratio_is_positive_and_finite(results):
  ks = results["config"]["ks"]
  expected_times = {"train_step_masked", "train_step_dense", "snip",
                    *(f"prospr_k{k}" for k in ks), f"prospr_first_order_k{max(ks)}",
                    "ntk_sap_round", "px_round"}
  assert set(results["times"]) == expected_times
  for name, t in results["times"].items():
    assert _positive_finite(t["compile_ms"]), name
    assert _positive_finite(t["run_ms"]), name
    assert _positive_finite(t["peak_mib"]), name
  assert len(results["ratios"]) == len(ks) + 7  # + NTK-SAP and PX: per round, to a mask
  for name, ratio in results["ratios"].items():
    assert _positive_finite(ratio), name


def test_memory_ratios_for_each_k(results):
  memory_ks = [str(k) for k in cost_suite.SMOKE_SETTINGS["memory_ks"]]
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


def test_results_are_json_and_report_lists_every_target(results):
  assert json.loads(json.dumps(results)) == results
  assert [t["name"] for t in results["targets"]] and all(
      isinstance(t["met"], bool) for t in results["targets"])
  report = cost_report.format_report(results)
  assert report.count("target ") == len(results["targets"]) == 3
  assert results["device"]["device_kind"] in report
  # A result record, stamped with the code it ran on.
  assert results["benchmark"] == "prospr_cost"
  assert results["code"] == provenance.code_version()
  assert results["device"] == result_record.device_info()
  assert f"code: commit {results['code']['git_commit']}" in report


def test_library_and_benchmarks_import_no_tensorflow_tfds_or_ml_collections():
  # GPU/TPU VMs often have just jax, flax, optax and absl.
  code = """
import pkgutil, sys
import prospr_jax, prospr_jax.benchmark
for module in pkgutil.iter_modules(prospr_jax.benchmark.__path__):
  __import__(f"prospr_jax.benchmark.{module.name}")
from prospr_jax.saliency.prospr import meta_gradient
bad = [m for m in ("tensorflow", "tensorflow_datasets", "ml_collections") if m in sys.modules]
assert not bad, bad
"""
  result = _python("-c", code)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["cifar10_resnet20", "cifar10_vgg16", "tinyimagenet_resnet18"])
def test_presets_build_their_model_at_their_input_shape(name):
  preset = PRESETS[name]
  model = models.get_model(preset["model_name"], preset["num_classes"])
  x = jax.ShapeDtypeStruct((2, *preset["input_shape"]), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2, preset["num_classes"])


def test_preset_refuses_the_flags_it_sets():
  result = _python("experiments/benchmark.py", "--preset=cifar10_vgg16", "--model=resnet20")
  assert result.returncode != 0
  assert "--preset sets --model" in result.stderr


def test_reference_comparison_pairs_the_same_setting_and_adds_its_targets(results):
  cfg = results["config"]
  k = cfg["reference_k"]
  setting = {"model": cfg["model"], "batch_size": cfg["batch_size"],
             "input_shape": cfg["input_shape"], "num_classes": cfg["num_classes"]}
  records = [
      {"kind": "environment", "torch": "2.13.0", "cpu_threads": 2, "gpu": None},
      # Another batch size: must not be picked.
      setting | {"batch_size": cfg["batch_size"] + 1, "kind": "train_step", "run_ms": 1e-3},
      setting | {"kind": "train_step", "run_ms": 2.0},
      setting | {"kind": "prospr", "method": "full", "k": k, "run_ms": 20.0},
      # No first-order record: its row has no reference.
  ]
  comparison = reference_comparison(results, records)
  rows = {row["key"]: row for row in comparison["rows"]}
  times = results["times"]
  assert rows["train_step"]["reference_ms"] == 2.0
  assert rows["train_step"]["jax_over_reference"] == times["train_step_masked"]["run_ms"] / 2.0
  assert rows["full"]["jax_over_reference"] == times[f"prospr_k{k}"]["run_ms"] / 20.0
  assert rows["first_order"]["reference_ms"] is None
  assert rows["first_order"]["jax_over_reference"] is None
  assert comparison["steps_per_full"]["reference"] == 10.0
  assert comparison["environment"]["torch"] == "2.13.0"

  with_reference = results | {"reference": comparison}
  added = cost_suite.targets(with_reference)[len(cost_suite.targets(results)):]
  assert [(t["limit"], t["value"]) for t in added] == [
      (cost_suite.OVER_REFERENCE_MAX["train_step"], rows["train_step"]["jax_over_reference"]),
      (cost_suite.OVER_REFERENCE_MAX["full"], rows["full"]["jax_over_reference"])]
  report = cost_report.format_report(with_reference)
  assert "side by side with the reference" in report and "torch 2.13.0" in report


def test_interleaved_median_ms_times_every_call_after_a_warm_up():
  counts = {"a": 0, "b": 0}

  def call(key):
    counts[key] += 1
    return jax.numpy.zeros(())

  ms = timing.interleaved_median_ms({key: lambda k=key: call(k) for key in counts}, repeats=3)
  assert counts == {"a": 4, "b": 4}
  assert set(ms) == {"a", "b"} and all(t >= 0 for t in ms.values())
  with pytest.raises(ValueError, match="repeats >= 1"):
    timing.interleaved_median_ms({"a": lambda: None}, repeats=0)


def test_a_record_refuses_measurements_named_like_its_own_keys():
  with pytest.raises(ValueError, match=r"\[.config., .device.\]"):
    result_record.new_record("x", {}, config={}, device="cpu")


def test_interleaved_timings_tell_a_busy_core_from_a_waiting_one():
  """A call that spins in Python keeps about one core busy; one that sleeps keeps none."""

  def spin():
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
      pass

  timings = timing.interleaved_timings({"spin": spin, "sleep": lambda: time.sleep(0.05)},
                                       repeats=3)
  assert timings["spin"].ms >= 50 and timings["sleep"].ms >= 50
  # Under load the spinning thread may be descheduled, so allow a wide margin below 1 core.
  assert 0.5 < timings["spin"].cores_busy < 1.1
  assert timings["sleep"].cores_busy < 0.2
