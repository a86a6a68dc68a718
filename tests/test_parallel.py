"""Data parallelism on 4 forced CPU devices, and a killed run that resumes exactly."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prospr_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


def test_four_devices_give_the_masks_and_step_of_one_device():
  proc = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "multi_device_check.py")],
      # Generous collective timeouts: on a loaded 2-core machine one of the 4 host "devices"
      # can reach an all-reduce long after the others, and XLA:CPU aborts the process when a
      # rendezvous waits past its (short) default termination timeout.
      env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"
                         " --xla_cpu_collective_timeout_seconds=900"
                         " --xla_cpu_collective_call_terminate_timeout_seconds=900"),
      capture_output=True, text=True, timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["prospr"] and out["snip"] and out["grasp"], out
  assert out["score_devices"] == 4 and out["train_devices"] == 4
  assert out["max_score_diff"] <= 1e-5 * out["max_score"]
  assert out["max_param_diff"] < 1e-5


def _command(workdir, data_dir):
  return [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"),
          f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", "--config.train.num_epochs=2",
          "--config.train.checkpoint_every_steps=5"]


def _final_params(workdir):
  _, _, state = train.load_run(str(workdir))
  assert int(state.step) == 40
  return state.params


def test_run_killed_mid_training_resumes_to_the_same_params(tmp_path):
  data_dir = tmp_path / "tfds"
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  subprocess.run(_command(reference, data_dir), env=_env(), check=True, capture_output=True,
                 timeout=600)

  proc = subprocess.Popen(_command(killed, data_dir), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  checkpoints = killed / "checkpoints"
  deadline = time.time() + 300
  while not (checkpoints / "15").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "results.json").exists(), "the run ended before it could be killed"

  resumed = subprocess.run(_command(killed, data_dir), env=_env(), capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from the checkpoint at step" in resumed.stderr
  for a, b in zip(jax.tree.leaves(_final_params(reference)),
                  jax.tree.leaves(_final_params(killed))):
    np.testing.assert_array_equal(a, b)
