"""A real two-process run (CPU, gloo collectives, localhost): same masks and params as one
process, only process 0 writes results, and a run killed with SIGKILL resumes exactly.

The test config (LeNet-300-100, ProsPr k=1) runs 2 epochs of 20 steps with a checkpoint every 5
steps, through `experiments/prune_and_train.py`, as
  * 2 processes x 2 CPU devices (`jax.distributed` with an explicit coordinator address),
  * and 1 process x 1 device (this pytest process),
and again as 2 x 2, killed with SIGKILL once a checkpoint exists, then resumed by 2 x 2.
A group of processes that stops using CPU is a hang (`process_group`): it is retried once with
a fresh port and workdir; wrong numbers and failed processes are never retried.
One process with 4 devices is `test_parallel.py`'s.
"""

import json
import os
import pathlib
import shutil
import sys

import jax
import numpy as np

import process_group  # tests/ is on sys.path (pytest's rootdir-relative import)
from configs import test as test_config
from prospr_jax.experiment import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
_OVERRIDES = {"train.num_epochs": 2, "train.checkpoint_every_steps": 5}
_STEPS = 40


def _env(tmp_path: pathlib.Path, devices: int) -> dict[str, str]:
  """`devices` CPU devices per process; every run shares one persistent compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             # One device may reach an all-reduce long after the others on a loaded machine;
             # XLA:CPU's default rendezvous timeouts would abort the process.
             XLA_FLAGS=(f"--xla_force_host_platform_device_count={devices}"
                        " --xla_cpu_collective_timeout_seconds=900"
                        " --xla_cpu_collective_call_terminate_timeout_seconds=900"))
  return env


def _commands(workdir, num_processes: int, args: list[str],
              binary: str = "prune_and_train.py") -> list[list[str]]:
  """The command line of every process of `experiments/<binary>` on the test config with
  `args`, on `num_processes`."""
  base = [sys.executable, str(ROOT / "experiments" / binary),
          f"--config={ROOT / 'configs' / 'test.py'}", f"--workdir={workdir}", *args]
  if num_processes == 1:
    return [base]
  port = process_group.free_port()
  return [base + ["--config.distributed.enabled=True",
                  f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                  f"--config.distributed.num_processes={num_processes}",
                  f"--config.distributed.process_id={i}"] for i in range(num_processes)]


def _run_args(data_dir) -> list[str]:
  """`prune_and_train.py`'s arguments for this module's runs."""
  return [f"--config.data_dir={data_dir}"] + [f"--config.{k}={v}" for k, v in _OVERRIDES.items()]


def _run(tmp_path, workdir, args, num_processes, devices, *, resume=False,
         binary="prune_and_train.py", **kwargs):
  """Runs `binary` on the test config with `args` in `workdir`; returns every process's
  (stdout, stderr).

  A hang is retried once, from a fresh workdir unless `resume` (a resumed run resumes again).
  """
  for attempt in (1, 2):
    try:
      return process_group.run(_commands(workdir, num_processes, args, binary),
                               _env(tmp_path, devices),
                               tmp_path / "logs" / f"{workdir.name}_{resume}_{attempt}", **kwargs)
    except process_group.Hang as hang:
      if attempt == 2:
        raise AssertionError(f"{workdir.name} hung twice; the second time:\n{hang}") from None
      if not resume:
        shutil.rmtree(workdir, ignore_errors=True)


def _finished_steps(workdir: pathlib.Path) -> list[int]:
  """Steps of the finalized checkpoints (orbax renames `<step>.orbax-checkpoint-tmp` when done)."""
  checkpoints = workdir / "checkpoints"
  return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.is_dir() else []


def _final_state(workdir):
  state = train.load_run(str(workdir))[2]
  assert int(state.step) == _STEPS
  return state


def _assert_trees(a, b, **tolerance):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    if tolerance:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)
    else:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_processes_match_one_and_resume_exactly(tmp_path, fashion_mnist_data_dir):
  data_dir = fashion_mnist_data_dir
  one, two = tmp_path / "1x1", tmp_path / "2x2"
  two_out = _run(tmp_path, two, _run_args(data_dir), num_processes=2, devices=2)
  config = test_config.get_config()
  config.data_dir = data_dir
  config.update_from_flattened_dict(_OVERRIDES)
  train.train_and_evaluate(config, str(one))

  # One config whatever the topology, written by process 0; process 1 reports nothing.
  configs = [json.loads((w / "config.json").read_text()) for w in (one, two)]
  assert configs[1]["distributed"]["process_id"] == 0
  for c in configs:
    assert ({k: v for k, v in c.items() if k != "distributed"}
            == {k: v for k, v in configs[0].items() if k != "distributed"})
  assert len(list((two / "tensorboard").iterdir())) == 1
  (out0, err0), (out1, err1) = two_out
  assert "epoch 2/2 done" in err0 and "test top-1" in out0
  assert "epoch" not in err1 and "test top-1" not in out1

  states = {w.name: _final_state(w) for w in (one, two)}
  _assert_trees(states["2x2"].masks, states["1x1"].masks)  # exactly the same masks
  _assert_trees(states["2x2"].params, states["1x1"].params, rtol=1e-4, atol=1e-5)
  top1 = [json.loads((w / "results.json").read_text())["final_test_top1"] for w in (one, two)]
  assert max(top1) - min(top1) <= 2e-4, top1  # at most 2 of the 10000 test images differ

  # 2 x 2 again, killed with SIGKILL once a checkpoint is finalized, then resumed by 2 x 2.
  killed = tmp_path / "killed"
  _run(tmp_path, killed, _run_args(data_dir), num_processes=2, devices=2,
       stop_when=lambda: bool(_finished_steps(killed)))
  assert not (killed / "results.json").exists(), "the run ended before it could be killed"
  assert 0 < max(_finished_steps(killed)) < _STEPS
  (_, resumed_err0), _ = _run(tmp_path, killed, _run_args(data_dir), num_processes=2, devices=2,
                              resume=True)
  assert "Resumed from the checkpoint at step" in resumed_err0
  resumed = _final_state(killed)
  _assert_trees(resumed.params, states["2x2"].params)  # bitwise: the uninterrupted 2 x 2 run
  _assert_trees(resumed.masks, states["2x2"].masks)


def test_a_population_sweep_on_two_processes_is_the_one_process_sweep(tmp_path):
  """`sweep.py --population_size=2` of dense, magnitude and SNIP on 2 processes x 1 device:
  the population of 2 is sharded, one member per process, the population of 1 is trained by
  both devices (and says so); every run's masks and accuracies are those of the same sweep in
  one process (each member trains alone on its device, as in one process; SNIP's scores are
  summed over 2 devices, which may reorder float sums, hence the tolerance), and the files are
  written once, by process 0."""
  args = ["--methods=magnitude,snip", "--sparsities=0.9", "--seeds=0", "--population_size=2"]
  two, one = tmp_path / "2x1", tmp_path / "1x1"
  (_, err0), (_, err1) = _run(tmp_path, two, args, num_processes=2, devices=1,
                              binary="sweep.py")
  _run(tmp_path, one, args, num_processes=1, devices=1, binary="sweep.py")
  assert "1 members do not divide over 2 devices" in err0
  assert "do not divide" not in err1  # process 1 reports nothing
  for run in ("dense/seed0", "magnitude/s0.9/seed0", "snip/s0.9/seed0"):
    results = [json.loads((root / run / "results.json").read_text()) for root in (two, one)]
    assert results[0]["provenance"]["num_processes"] == 2, run
    assert abs(results[0]["final_test_top1"] - results[1]["final_test_top1"]) <= 2e-4, run
    np.testing.assert_allclose([h["train_loss"] for h in results[0]["history"]],
                               [h["train_loss"] for h in results[1]["history"]], rtol=1e-4)
  for run in ("magnitude/s0.9/seed0", "snip/s0.9/seed0"):
    masks = [np.load(root / run / "masks.npz") for root in (two, one)]
    assert masks[0].files == masks[1].files
    for name in masks[0].files:
      np.testing.assert_array_equal(masks[0][name], masks[1][name])
  records = json.loads((two / "all_results.json").read_text())
  assert sorted(r["method"] for r in records) == ["dense", "magnitude", "snip"]
