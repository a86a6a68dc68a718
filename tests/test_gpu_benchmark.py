"""The GPU suite (`prospr_jax.benchmark.gpu_suite`, run by experiments/gpu_benchmark.py): its
plans, time guard and side-by-side tables, on a tiny model and a stand-in for the reference
script (torch is not a test dependency). No timing asserts."""

import ast
import json
import pathlib
import sys
import textwrap

import pytest

from prospr_jax.benchmark import gpu_report, gpu_suite
from prospr_jax.benchmark.synthetic_setup import PRESETS

TINY = {"tiny": {"model_name": "lenet300100", "input_shape": (28, 28, 1), "num_classes": 10}}
FAKE_REFERENCE_MS = 1000.0
FAKE_REFERENCE = textwrap.dedent(f"""
    # Stands in for experiments/reference_benchmark.py (its path is this script's first argument).
    import argparse, json
    parser = argparse.ArgumentParser()
    parser.add_argument("script")
    for name in ("--plan", "--output", "--ref_dir", "--repeats", "--budget_s"):
      parser.add_argument(name)
    args = parser.parse_args()
    with open(args.output, "w") as out:
      out.write(json.dumps({{"kind": "environment", "torch": "fake", "gpu": None}}) + "\\n")
      for job in json.load(open(args.plan)):
        out.write(json.dumps({{**job, "run_ms": {FAKE_REFERENCE_MS}}}) + "\\n")
""")


def _config(tmp_path, budget_s, reference_dir="missing"):
  fake = tmp_path / "fake_reference.py"
  fake.write_text(FAKE_REFERENCE)
  return gpu_suite.SuiteConfig(
      settings=TINY, batch_sizes=(4,), ks=(1,), repeats=1, budget_s=budget_s,
      reference_jobs=tuple(gpu_suite.reference_plan(TINY, (4,), (1,), ("tiny", 4, 1))),
      reference_script="experiments/reference_benchmark.py", reference_dir=str(reference_dir),
      torch_python=f"{sys.executable} {fake}", reference_budget_s=60.0)


def test_reference_plan_runs_the_published_cpu_job_first_then_every_setting():
  settings = {name: PRESETS[name] for name in ("cifar10_resnet20", "cifar10_vgg16")}
  jobs = gpu_suite.reference_plan(settings, (128, 256), (1, 3, 10),
                                      ("cifar10_resnet20", 128, 3))
  assert jobs[0] == {"preset": "cifar10_resnet20", "model": "resnet20_prospr", "num_classes": 10,
                     "input_shape": [32, 32, 3], "batch_size": 128, "kind": "prospr",
                     "method": "full", "k": 3, "published": True}
  assert len(jobs) == 1 + 2 * 2 * (1 + 3 + 1)
  assert [j for j in jobs[1:] if j.get("published") and j["method"] == "full"] == []
  first_order = [j for j in jobs if j.get("method") == "first_order"]
  assert {(j["preset"], j["batch_size"], j["k"]) for j in first_order} == {
      (p, b, 3) for p in settings for b in (128, 256)}


def test_jax_plan_runs_every_configuration_without_remat_first():
  plan = gpu_suite.jax_plan(["a", "b"], [128, 256])
  assert [r["remat"] for r in plan] == [False] * 4 + [True] * 4
  assert plan[:2] == [{"preset": "a", "batch_size": 128, "remat": False},
                      {"preset": "b", "batch_size": 128, "remat": False}]


def test_nothing_starts_after_the_budget_and_the_outputs_say_so(tmp_path):
  suite = gpu_suite.run_suite(_config(tmp_path, budget_s=0.0), tmp_path)
  assert [r.get("skipped") for r in suite["prospr_jax"]] == ["budget", "budget"]
  assert "lacks the authors' code" in suite["reference"]["error"]
  text = (tmp_path / "benchmark_gpu.txt").read_text()
  assert text.count("skipped (budget)") == 2
  assert json.loads((tmp_path / "benchmark_gpu.json").read_text()) == suite
  assert suite["benchmark"] == "gpu_side_by_side" and suite["code"]["git_commit"]


def test_side_by_side_with_the_reference(tmp_path):
  reference_dir = tmp_path / "ref"
  (reference_dir / "prospr").mkdir(parents=True)
  (reference_dir / "prospr" / "prospr.py").touch()
  suite = gpu_suite.run_suite(
      _config(tmp_path, budget_s=3600.0, reference_dir=reference_dir), tmp_path)

  assert suite["reference"]["error"] is None
  assert len(suite["reference"]["jobs"]) == len(suite["config"]["ks"]) + 3
  runs = {r["remat"]: r["results"] for r in suite["prospr_jax"]}
  assert "prospr_k1_remat" in runs[True]["times"] and "prospr_k1" in runs[False]["times"]
  assert runs[True]["config"]["remat"] and runs[True]["memory"] == {}

  rows = gpu_report.comparison_rows(suite)
  assert [r["function"] for r in rows] == ["train step (masked)", "full ProsPr k=1",
                                           "first-order ProsPr k=1"]
  for row in rows:
    assert row["reference_ms"] == FAKE_REFERENCE_MS
    assert row["ref_over_jax"] == pytest.approx(FAKE_REFERENCE_MS / row["jax_ms"])
  assert rows[1]["jax_remat_ms"] == runs[True]["times"]["prospr_k1_remat"]["run_ms"]
  published = gpu_report.published_cpu_row(suite)
  assert published["jax_ms"] == runs[False]["times"]["prospr_k1"]["run_ms"]
  assert published["reference_ms"] == FAKE_REFERENCE_MS

  text = (tmp_path / "benchmark_gpu.txt").read_text()
  assert "ref/jax" in text and "published full mode" in text
  assert "skipped" not in text and suite["device"]["device_kind"] in text
  assert pathlib.Path(tmp_path / "reference.jsonl").exists()


def test_published_cpu_setting_refuses_a_malformed_spec():
  assert gpu_suite.published_cpu_setting("cifar10_resnet20:8:1") == ("cifar10_resnet20", 8, 1)
  assert gpu_suite.published_cpu_setting("") is None
  with pytest.raises(ValueError, match="PRESET:BATCH:K"):
    gpu_suite.published_cpu_setting("cifar10_resnet20:8")


def test_the_reference_script_imports_neither_jax_nor_prospr_jax():
  # It runs under a Python that has torch and lacks jax (scripts/cpu_benchmark.sh).
  script = pathlib.Path(__file__).resolve().parents[1] / "experiments/reference_benchmark.py"
  tree = ast.parse(script.read_text())
  imported = {alias.name.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.Import) for alias in node.names}
  imported |= {node.module.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module}
  assert "torch" in imported
  assert not imported & {"jax", "jaxlib", "flax", "optax", "prospr_jax"}, imported
