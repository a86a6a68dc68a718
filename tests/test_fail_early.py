"""Bad input fails early and clearly: a bad config before any file is written, a damaged
checkpoint falls back to the previous one, the library API names what is wrong, no autograph
temp files are left behind, and a peer that never starts times out with a message."""

import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import process_group  # tests/ is on sys.path (pytest's rootdir-relative import)
import prospr_jax as pj
from configs import test as test_config
from conftest import TinyBNCNN, make_batches, mlp_loss, mlp_params
from prospr_jax import models
from prospr_jax.adapters import LinenLoss
from prospr_jax.experiment import distributed, peer_watch, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
_FAST_S = 30.0
"""A bad config fails within this many seconds (no pruning, no training, no data pass)."""


def _config(data_dir, **changes):
  config = test_config.get_config()
  config.data_dir = data_dir
  for path, value in changes.items():
    section, _, field = path.rpartition(".")
    (config[section] if section else config)[field] = value
  return config


@pytest.mark.parametrize("changes, match", [
    ({"train.checkpoint_every_steps": 0}, r"config.train.checkpoint_every_steps=0 must be >= 1"),
    ({"train.log_every_steps": 0}, r"config.train.log_every_steps=0 must be >= 1"),
    ({"train.eval_every_epochs": 0}, r"config.train.eval_every_epochs=0 must be >= 1"),
    ({"train.eval_batch_size": 0}, r"config.train.eval_batch_size=0 must be >= 1"),
    ({"train.batch_size": -32}, r"config.train.batch_size=-32 must be >= 1"),
    ({"train.batch_size": 0}, r"config.train.batch_size=0 must be >= 1"),
    ({"train.batch_size": 60032}, r"config.train.batch_size=60032 is larger than the training "
                                  r"split of fashion_mnist \(60000 images\)"),
    ({"train.num_epochs": 0}, r"config.train.num_epochs=0 must be >= 1"),
    ({"train.steps_per_epoch": 0}, r"config.train.steps_per_epoch=0 must be >= 1 or -1"),
    ({"train.lr_schedule": "linear"}, r"config.train.lr_schedule='linear'; choose one of"),
    ({"train.learning_rate": -0.1}, r"config.train.learning_rate=-0.1 is outside \[0.0, inf\]"),
    ({"prune.batch_size": 0}, r"config.prune.batch_size=0 must be >= 1"),
    ({"prune.batch_size": 60032}, r"config.prune.batch_size=60032 is larger than the training"),
    ({"prune.exclude": ("head", "(")}, r"config.prune.exclude: '\(' is not a regular expression"),
    ({"prune.nonexistent": 1}, r"config.prune has no field\(s\) \['nonexistent'\]; its fields "
                               r"are \[.*'batch_size'.*'sparsity'"),
    ({"train.nonexistent": 1}, r"config.train has no field\(s\) \['nonexistent'\]"),
])
def test_a_bad_config_fails_in_seconds_naming_the_field_and_leaves_no_files(
    tmp_path, fashion_mnist_data_dir, changes, match):
  workdir = tmp_path / "run"
  start = time.perf_counter()
  with pytest.raises((ValueError, TypeError), match=match):
    train.train_and_evaluate(_config(fashion_mnist_data_dir, **changes), str(workdir))
  assert time.perf_counter() - start < _FAST_S
  assert not workdir.exists()  # no config.json, no checkpoints/


def test_a_field_of_the_wrong_type_is_named(tmp_path, fashion_mnist_data_dir):
  config = _config(fashion_mnist_data_dir, **{"train.lr_decay_fractions": (0.5, "3/4")})
  with pytest.raises(TypeError, match=r"config.train.lr_decay_fractions must be a number; got "
                                      r"'3/4' \(str\)"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_another_runs_workdir_is_refused_naming_the_leaf_fields_and_both_values(
    tmp_path, fashion_mnist_data_dir):
  workdir = str(tmp_path / "run")
  train.claim_workdir(_config(fashion_mnist_data_dir, **{"train.num_epochs": 3}), workdir)
  other = _config(fashion_mnist_data_dir, **{"train.num_epochs": 5, "prune.sparsity": 0.5})
  with pytest.raises(ValueError, match=r"different config: prune.sparsity: 0.9 \(workdir\) vs "
                                       r"0.5 \(this run\); train.num_epochs: 3 \(workdir\) vs 5 "
                                       r"\(this run\)\."):
    train.train_and_evaluate(other, workdir)


def _binary(workdir: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={workdir}", *overrides],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))


def test_the_binary_names_an_unknown_field_and_lists_the_valid_ones(tmp_path):
  proc = _binary(tmp_path / "run", "--config.prune.nonexistent=1")
  assert proc.returncode == 1
  assert ("FATAL Flags parsing error: --config.prune.nonexistent: config.prune has no field "
          "'nonexistent'; its fields are ['allocation', 'batch_size'") in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()


def test_the_binary_refuses_a_zero_interval_in_one_line_before_any_work(
    tmp_path, fashion_mnist_data_dir):
  proc = _binary(tmp_path / "run", f"--config.data_dir={fashion_mnist_data_dir}",
                 "--config.train.checkpoint_every_steps=0")
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1] == (
      "ERROR: config.train.checkpoint_every_steps=0 must be >= 1.")
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()


def test_the_binary_refuses_another_runs_workdir_in_one_line(tmp_path, fashion_mnist_data_dir):
  workdir = tmp_path / "run"
  train.claim_workdir(_config(fashion_mnist_data_dir, **{"train.num_epochs": 3}), str(workdir))
  proc = _binary(workdir, f"--config.data_dir={fashion_mnist_data_dir}")
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1].startswith(
      f"ERROR: {workdir} holds a run with a different config: train.num_epochs: 3 (workdir) vs 1 "
      "(this run). Use another --workdir")
  assert "Traceback" not in proc.stderr


def test_the_sweep_checks_every_point_before_any_run(tmp_path, fashion_mnist_data_dir):
  """A bad value in the grid's second seed stops the sweep before the first seed's runs,
  naming the point."""
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "sweep.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={tmp_path / 'sweep'}",
       f"--config.data_dir={fashion_mnist_data_dir}", "--methods=snip", "--sparsities=0.9",
       "--seeds=0,-1"],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1] == "ERROR: dense seed=-1: config.seed=-1 must be >= 0."
  assert not (tmp_path / "sweep").exists()


def _damage_checkpoint(workdir: pathlib.Path, step: int) -> None:
  """Truncates the largest data file of the checkpoint at `step` (a torn write)."""
  files = [p for p in (workdir / "checkpoints" / str(step)).rglob("*") if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(largest.stat().st_size // 3)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, fashion_mnist_data_dir, caplog):
  config = _config(fashion_mnist_data_dir, **{"train.checkpoint_every_steps": 5})
  complete, damaged = tmp_path / "complete", tmp_path / "damaged"
  train.train_and_evaluate(config, str(complete))  # checkpoints 15 and 20 are kept
  shutil.copytree(complete, damaged)
  _damage_checkpoint(damaged, 20)
  with caplog.at_level("WARNING", logger="prospr_jax"):
    train.train_and_evaluate(config, str(damaged))  # resumes from step 15, saves 20 again
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("The checkpoint at step 20" in w and "does not restore" in w for w in warnings)
  assert all("\n" not in w for w in warnings)
  expected, resumed = (train.load_run(str(w))[2] for w in (complete, damaged))
  assert int(resumed.step) == 20
  for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(resumed.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise

  _damage_checkpoint(damaged, 15)
  _damage_checkpoint(damaged, 20)
  with pytest.raises(RuntimeError, match=r"No checkpoint in .* restores: step 20: .*; step 15: "):
    train.load_run(str(damaged))


@pytest.mark.parametrize("arguments, error, match", [
    ({"optimizer": "sgd"}, TypeError,
     r"optimizer must be an optax transformation such as optax.sgd\(0.1\); got 'sgd' \(str\)"),
    ({"filter_fn": "head"}, TypeError, r"filter_fn must be a function; got 'head' \(str\)"),
    ({"loss_fn": 1.0}, TypeError, r"loss_fn must be a function; got 1.0 \(float\)"),
])
def test_prune_names_an_argument_of_the_wrong_kind(arguments, error, match):
  kwargs = {"loss_fn": mlp_loss, "batches": make_batches(jax.random.key(1), 1)} | arguments
  with pytest.raises(error, match=match):
    pj.prune("prospr", mlp_params(jax.random.key(0)), 0.5, **kwargs)


def test_an_int_key_is_refused_saying_how_to_make_one():
  with pytest.raises(TypeError, match=r"key must be a JAX PRNG key, made with "
                                      r"jax.random.key\(seed\) .*; got 0 \(int\)"):
    pj.prune("random", mlp_params(jax.random.key(0)), 0.5, key=0)
  with pytest.raises(TypeError, match=r"got an array of dtype int32 and shape \(3,\)"):
    pj.prune("random", mlp_params(jax.random.key(0)), 0.5, key=jnp.arange(3))


def test_typed_and_raw_keys_are_both_accepted():
  params = mlp_params(jax.random.key(0))
  typed = pj.prune("random", params, 0.5, key=jax.random.key(7))
  raw = pj.prune("random", params, 0.5, key=jax.random.PRNGKey(7))
  jax.tree.map(np.testing.assert_array_equal, typed, raw)


def test_the_linen_loss_names_the_batch_keys_it_expects_and_those_given():
  model = TinyBNCNN()
  variables = models.init_variables(model, jax.random.key(3), (6, 6, 2))
  batch = {"x": jnp.zeros((4, 6, 6, 2)), "y": jnp.zeros((4,), jnp.int32)}
  with pytest.raises(ValueError, match=r"A batch must have the keys \['image', 'label'\] .*; "
                                       r"this one has \['x', 'y'\], without \['image', 'label'\]"):
    pj.prune("snip", variables["params"], 0.5, loss_fn=LinenLoss(model), batches=[batch],
             state={"batch_stats": variables["batch_stats"]})
  with pytest.raises(TypeError, match=r"A batch must be a dict .*; got a tuple"):
    LinenLoss(model)(variables["params"], {"batch_stats": variables["batch_stats"]},
                     (batch["x"], batch["y"]))


_ITERATE_PIPELINES = """
import glob, os, sys, tempfile
from prospr_jax.experiment import data
data_dir = sys.argv[1]
for augment in (True, False):
  next(data.train_batches("fashion_mnist", batch_size=8, seed=0, data_dir=data_dir,
                          augment=augment, rows=slice(0, 4)))
next(data.eval_batches("fashion_mnist", batch_size=8, data_dir=data_dir))
print(len(glob.glob(os.path.join(tempfile.gettempdir(), "__autograph_generated_file*.py"))))
sys.stdout.flush()
os._exit(0)  # as a killed process: no atexit clean-up
"""


def test_the_input_pipelines_write_no_autograph_files(tmp_path, fashion_mnist_data_dir):
  temp = tmp_path / "tmp"
  temp.mkdir()
  proc = subprocess.run(
      [sys.executable, "-c", _ITERATE_PIPELINES, fashion_mnist_data_dir],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TMPDIR=str(temp)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["0"]  # none while the pipelines run
  assert not glob.glob(str(temp / "__autograph_generated_file*.py"))  # none left behind


def test_a_peer_that_never_starts_times_out_naming_the_coordinator(tmp_path):
  """Process 0 of a two-process run starts alone: it exits within seconds, not minutes."""
  address = f"127.0.0.1:{process_group.free_port()}"
  start = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={tmp_path / 'run'}",
       "--config.distributed.enabled=True", f"--config.distributed.coordinator_address={address}",
       "--config.distributed.num_processes=2", "--config.distributed.process_id=0",
       "--config.distributed.initialization_timeout_s=5"],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert time.perf_counter() - start < _FAST_S
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert (f"Process 0 could not join the 2-process run within 5 s "
          f"(config.distributed.initialization_timeout_s): coordinator {address}; processes [1] "
          "did not all connect to it. Start the same command on every host") in proc.stderr
  assert "Check failure stack trace" not in proc.stderr
  assert not (tmp_path / "run").exists()


def test_a_peer_killed_mid_run_stops_the_survivor_in_seconds_with_one_line(
    tmp_path, fashion_mnist_data_dir):
  """Process 1 of a two-process run is killed once the first checkpoint is written: process 0
  exits with status 1 and one line naming process 1 and the step, well before JAX's own
  heartbeat timeout would abort it with C++ logs."""
  workdir, port = tmp_path / "run", process_group.free_port()
  commands = [
      [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={workdir}",
       f"--config.data_dir={fashion_mnist_data_dir}", "--config.train.num_epochs=50",
       "--config.train.checkpoint_every_steps=20", "--config.distributed.enabled=True",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
       "--config.distributed.heartbeat_timeout_s=5"] for i in range(2)]
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True) for c in commands]
  try:
    deadline = time.monotonic() + 300
    while not (workdir / "checkpoints" / "20").is_dir():
      assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
      time.sleep(0.2)
    procs[1].kill()
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    stopped_s = time.monotonic() - killed
  finally:
    for proc in procs:
      proc.kill()
      proc.communicate()
  assert procs[0].returncode == 1, err[-3000:]
  assert stopped_s < 5 + peer_watch.JAX_HEARTBEAT_MARGIN_S, stopped_s
  assert re.fullmatch(
      r"ERROR: process 1 of the 2-process run stopped around step \d+: no heartbeat for 5 s "
      r"\(config.distributed.heartbeat_timeout_s\). Process 0 stops too. Rerun the same "
      r"command on every host to resume from the latest checkpoint.", err.splitlines()[-1])
  assert "Check failure stack trace" not in err and "Traceback" not in err


def test_a_timeout_below_one_second_is_refused():
  config = test_config.get_config().distributed
  config.heartbeat_timeout_s = 0
  with pytest.raises(ValueError, match=r"config.distributed.heartbeat_timeout_s=0 must be >= 1"):
    distributed.initialize_distributed(config)
