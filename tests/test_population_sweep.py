"""Population sweeps: members match their single runs, grouping, skipping, divergence, resume."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from prospr_jax.experiment import grid_sweep, population_sweep, train
from prospr_jax.experiment.grid_sweep import GridPoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Magnitude and random pruning need no scoring batches; SNIP scores on the device data.
POINTS = [GridPoint("magnitude", 0.9, 0), GridPoint("snip", 0.9, 0), GridPoint("random", 0.8, 1)]


def _config(**train_fields):
  """The test config on Fashion-MNIST read from its IDX files into memory: no TFDS data_dir,
  no TensorFlow."""
  config = test_config.get_config()
  config.train.update(train_fields)
  return config


def _results(root, point):
  return json.loads((pathlib.Path(grid_sweep.run_dir(str(root), point))
                     / "results.json").read_text())


def test_members_match_their_single_runs_and_finished_ones_are_skipped(tmp_path):
  """A population of 3 (3 methods, 2 seeds) gives each member the test accuracies of its run
  made alone, exactly, and its train losses to 1e-5 (float32 rounding of another fusion);
  a rerun skips them all."""
  config = _config(checkpoint_every_steps=20)
  summary = grid_sweep.run_sweep(config, str(tmp_path / "pop"), POINTS, population_size=3)
  assert summary.ran == POINTS and not summary.failed
  for point in POINTS:
    member = _results(tmp_path / "pop", point)
    alone = train.train_and_evaluate(grid_sweep.point_config(config, point),
                                     str(tmp_path / "alone" / point.method))
    assert member["final_test_top1"] == alone["final_test_top1"] > 0.2  # chance: 0.1
    assert member["density"] == alone["density"]
    assert member["connectivity"] == alone["connectivity"]
    assert member["diverged"] is None and member["provenance"]
    np.testing.assert_allclose([h["train_loss"] for h in member["history"]],
                               [h["train_loss"] for h in alone["history"]], rtol=1e-5)

  def must_not_run(*args):
    raise AssertionError(f"finished members were trained again: {args}")

  again = grid_sweep.run_sweep(config, str(tmp_path / "pop"), POINTS, population_size=3,
                               population_fn=must_not_run)
  assert again.skipped == POINTS and not again.ran


def test_grouping_keeps_incompatible_runs_apart():
  config = _config()
  points = [GridPoint("snip", 0.9, 0), GridPoint("snip+x2", 0.9, 0),
            GridPoint("random+erk", 0.9, 1), GridPoint("dense", 0.0, 0),
            GridPoint("prospr+shuffle", 0.5, 2)]
  groups = grid_sweep.group_points(config, points, population_size=2)
  # x2 trains twice as long: never in a population with the others.
  assert groups == [[points[0], points[2]], [points[3], points[4]], [points[1]]]
  other_batch = _config(batch_size=64)
  with pytest.raises(ValueError, match=r"config\.train\.batch_size differs"):
    population_sweep.train_population([config, other_batch], ["a", "b"], "pop")
  config.dataset = "imagenet2012"
  with pytest.raises(ValueError, match=r"config\.dataset='imagenet2012' cannot train as a "
                                       "population"):
    population_sweep.check_population_config(config)


def test_a_diverged_member_is_recorded_and_the_others_train_on(
    tmp_path, monkeypatch):
  """Seed 1's initial params are made NaN (a test hook on the pruning step): its results say it
  diverged at step 1, with no final accuracy; the other member trains as usual."""
  prune_and_start = train.prune_and_start

  def nan_for_seed_1(plan, *args):
    state, meta = prune_and_start(plan, *args)
    if plan.seed == 1:
      state = state.replace(params={**state.params, "head": {
          k: jnp.full_like(v, jnp.nan) for k, v in state.params["head"].items()}})
    return state, meta

  monkeypatch.setattr(train, "prune_and_start", nan_for_seed_1)
  points = [GridPoint("magnitude", 0.9, 0), GridPoint("magnitude", 0.9, 1)]
  grid_sweep.run_sweep(_config(steps_per_epoch=5), str(tmp_path),
                       points, population_size=2)
  healthy, diverged = (_results(tmp_path, p) for p in points)
  assert diverged["diverged"] == {"step": 1}
  assert diverged["final_test_top1"] is None and diverged["history"] == []
  assert healthy["diverged"] is None and healthy["final_test_top1"] > 0.15  # chance: 0.1


def test_a_diverged_single_run_fails_the_binary(tmp_path):
  """A learning rate of 1e30 (a NaN one is refused with the config) makes step 2's loss NaN:
  prune_and_train.py exits non-zero and says so; results.json records the step."""
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={tmp_path}",
       "--config.train.learning_rate=1e30",
       "--config.prune.method=magnitude"],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert proc.returncode != 0
  assert "Training diverged: the loss of step 2 is not finite" in proc.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["diverged"] == {"step": 2} and results["final_test_top1"] is None


def _sweep_command(workdir):
  """A population of 3 (magnitude, random, dense) of the test config: 20 steps, a checkpoint
  every 5."""
  return [sys.executable, str(ROOT / "experiments" / "sweep.py"),
          f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={workdir}",
          "--config.train.checkpoint_every_steps=5",
          "--methods=magnitude,random",
          "--sparsities=0.9", "--seeds=0", "--population_size=3"]


def _checkpoint_steps(root: pathlib.Path) -> list[int]:
  return [int(p.name) for p in root.glob("populations/*/checkpoints/*") if p.name.isdigit()]


def test_population_killed_mid_training_resumes_to_the_same_results(tmp_path):
  env = {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  subprocess.run(_sweep_command(reference), env=env, check=True,
                 capture_output=True, timeout=600)
  proc = subprocess.Popen(_sweep_command(killed), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while (max(_checkpoint_steps(killed), default=0) < 10 and proc.poll() is None
         and time.time() < deadline):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not list(killed.glob("**/results.json")), "the sweep ended before it could be killed"
  resumed = subprocess.run(_sweep_command(killed), env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed the population of 3" in resumed.stderr
  points = grid_sweep.expand_grid(["magnitude", "random"], [0.9], [0], include_dense=True)
  for point in points:
    a, b = _results(reference, point), _results(killed, point)
    assert a["history"] == b["history"] and a["final_test_top1"] == b["final_test_top1"]


def test_training_modules_import_no_tensorflow():
  """TensorFlow (seconds and ~500 MB to import) is loaded only where a tf.data pipeline is
  built, never by importing the training harness."""
  code = ("import sys; import prospr_jax.experiment.train, prospr_jax.experiment.population_sweep;"
          " print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets')))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "[]"
