"""Cold time to a mask: what a user waits, from process start, for ProsPr's mask.

prospr_jax's side is experiments/prune_and_train.py (configs/default.py: SmallConvNet on
Fashion-MNIST) run as a fresh process: the seconds from its start until `<workdir>/masks.npz`
exists (written atomically, before training starts; the process is then killed). It runs with
an empty persistent compilation cache (a new directory: every program is compiled) and then
with the cache that run filled (nothing is compiled). The reference is the authors' PyTorch
ProsPr run eagerly: the wall time of a whole experiments/reference_benchmark.py process with one
full-ProsPr job and --repeats=0 (import torch, build the network, one call of their `prune`),
on two CPU threads, with the same network, batch size and k. The reference draws random
batches; prune_and_train.py reads Fashion-MNIST, and that is part of its time.

`run_cold_start` measures every k `repeats` times, interleaving the three (empty cache, warm
cache, reference) so that a drift of the machine's speed hits them alike, and returns a
'cold_start' `result_record` whose rows hold the raw seconds, their medians and the ratios to
the reference; `format_cold_start` prints it as a markdown table against the goals.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from prospr_jax.benchmark import result_record
from prospr_jax.experiment import provenance

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PRUNE_AND_TRAIN = REPO_ROOT / "experiments" / "prune_and_train.py"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.py"
REFERENCE_SCRIPT = REPO_ROOT / "experiments" / "reference_benchmark.py"

KS = (1, 3, 10, 30, 100)
"""ProsPr inner steps k measured by default."""
WARM_GOAL = 1.2
"""Goal: a warm cache's time to a mask <= this many times the reference's."""
EMPTY_GOAL = 2.0
"""Goal: an empty cache's time to a mask <= this many times the reference's."""
REFERENCE_THREADS = 2
"""CPU threads of the reference (torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS)."""
TIMEOUT_S = 1800.0
"""Default limit of one measured process, seconds."""
_POLL_S = 0.01
_STDERR_TAIL_CHARS = 2000


def _stderr_tail(stderr: IO[bytes]) -> str:
  """The last `_STDERR_TAIL_CHARS` characters written to the temporary file `stderr`."""
  stderr.seek(0)
  return stderr.read().decode(errors="replace")[-_STDERR_TAIL_CHARS:]


def _kill_group(process: subprocess.Popen) -> None:
  """SIGKILLs the process group led by `process` (started in a new session) and reaps it."""
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.wait()


def seconds_until_file(command: Sequence[str], path: str | os.PathLike[str],
                       env: Mapping[str, str], timeout_s: float) -> float:
  """Seconds from starting `command` (in its own process group, with environment `env`) until
  `path` exists, polled every 10 ms; then the process group is killed and reaped.

  Raises:
    RuntimeError: the process exited before `path` existed, or `timeout_s` seconds passed;
      the message ends with the last 2000 characters of its stderr.
  """
  with tempfile.TemporaryFile() as stderr:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=dict(env), stdout=subprocess.DEVNULL, stderr=stderr,
                               start_new_session=True)
    try:
      while True:
        exited = process.poll() is not None
        if os.path.exists(path):
          return time.perf_counter() - start
        if exited or time.perf_counter() - start > timeout_s:
          break
        time.sleep(_POLL_S)
    finally:
      _kill_group(process)
    why = (f"exited with status {process.returncode}" if exited
           else f"did not write it within {timeout_s} s")
    raise RuntimeError(f"{shlex.join(command)} {why} (waiting for {path}); the end of its "
                       f"stderr:\n{_stderr_tail(stderr)}")


def seconds_until_exit(command: Sequence[str], env: Mapping[str, str], timeout_s: float
                       ) -> float:
  """Wall seconds of `command` (own process group, environment `env`), which must exit 0.

  Raises:
    RuntimeError: it exited with another status, or ran past `timeout_s` seconds (then its
      process group is killed); the message ends with the last 2000 characters of its stderr.
  """
  with tempfile.TemporaryFile() as stderr:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=dict(env), stdout=subprocess.DEVNULL, stderr=stderr,
                               start_new_session=True)
    try:
      code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      _kill_group(process)
      code = None
    seconds = time.perf_counter() - start
    if code == 0:
      return seconds
    why = f"exited with status {code}" if code is not None else f"ran past {timeout_s} s"
    raise RuntimeError(f"{shlex.join(command)} {why}; the end of its stderr:\n"
                       f"{_stderr_tail(stderr)}")


def prune_config(overrides: Sequence[str]) -> Any:
  """configs/default.py with `overrides` (`--config.<field>=<value>` arguments) applied as
  prune_and_train.py applies them.

  Raises:
    ValueError: an override names no field of the config.
  """
  # Imported here: the benchmark library imports no ml-collections (GPU/TPU VMs often lack it).
  from prospr_jax.experiment import command_line  # pylint: disable=g-import-not-at-top

  return command_line.config_with_overrides(str(DEFAULT_CONFIG), overrides)


def prune_command(python: Sequence[str], k: int, workdir: str, cache_dir: str,
                  overrides: Sequence[str]) -> list[str]:
  """prune_and_train.py on configs/default.py with ProsPr's k, the cache dir and `overrides`."""
  return [*python, str(PRUNE_AND_TRAIN), f"--config={DEFAULT_CONFIG}", f"--workdir={workdir}",
          f"--config.compile_cache_dir={cache_dir}", f"--config.prune.num_steps={k}",
          *overrides]


def jax_env() -> dict[str, str]:
  """This process's environment with the repository on PYTHONPATH and JAX on the CPU."""
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}


def reference_env() -> dict[str, str]:
  """This process's environment with torch's CPU thread pools set to `REFERENCE_THREADS`."""
  threads = str(REFERENCE_THREADS)
  return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def reference_job(k: int, batch_size: int) -> dict[str, Any]:
  """The reference_benchmark.py job of the authors' full ProsPr as published (on the CPU) on
  prune_and_train.py's network and data shape."""
  return {"model": "small_convnet", "num_classes": 10, "input_shape": [28, 28, 1],
          "batch_size": batch_size, "kind": "prospr", "method": "full", "k": k,
          "published": True}


def reference_seconds(torch_python: Sequence[str], ref_dir: str, k: int, batch_size: int,
                      timeout_s: float) -> tuple[float, dict[str, Any]]:
  """Wall seconds of one reference_benchmark.py process running `reference_job` once
  (--repeats=0), and the environment line it wrote (torch version, threads).

  Raises:
    RuntimeError: the process failed, or its job recorded an error.
  """
  with tempfile.TemporaryDirectory(prefix="cold_start_ref_") as tmp:
    plan, output = pathlib.Path(tmp, "plan.json"), pathlib.Path(tmp, "out.jsonl")
    plan.write_text(json.dumps([reference_job(k, batch_size)]))
    command = [*torch_python, str(REFERENCE_SCRIPT), f"--plan={plan}", f"--output={output}",
               f"--ref_dir={pathlib.Path(ref_dir).resolve()}", "--repeats=0",
               f"--threads={REFERENCE_THREADS}"]
    seconds = seconds_until_exit(command, reference_env(), timeout_s)
    environment, job = [json.loads(line) for line in output.read_text().splitlines()]
  if "error" in job:
    raise RuntimeError(f"The reference's ProsPr job (k={k}) failed: {job['error']}")
  return seconds, environment


def _median(values: Sequence[float]) -> float | None:
  return statistics.median(values) if values else None


def summarize_k(k: int, empty_s: Sequence[float], warm_s: Sequence[float],
                reference_s: Sequence[float]) -> dict[str, Any]:
  """A row of the record: k, the raw seconds of each side (`reference_s` empty when the
  reference was not run), their medians (s; None without seconds) and the ratios of the warm
  and the empty cache's medians to the reference's (None without a reference)."""
  row = {"k": k, "empty_s": list(empty_s), "warm_s": list(warm_s),
         "reference_s": list(reference_s), "empty_median_s": _median(empty_s),
         "warm_median_s": _median(warm_s), "reference_median_s": _median(reference_s)}
  reference = row["reference_median_s"]
  row["warm_over_reference"] = row["warm_median_s"] / reference if reference else None
  row["empty_over_reference"] = row["empty_median_s"] / reference if reference else None
  return row


def measure_k(k: int, repeats: int, python: Sequence[str], overrides: Sequence[str],
              batch_size: int, torch_python: Sequence[str] | None, ref_dir: str,
              timeout_s: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """`summarize_k` of `repeats` rounds at `k`, each an empty-cache run (a new cache directory),
  a warm-cache run (that directory) and, with `torch_python`, the reference; every run gets a
  new workdir. Also returns the reference's environment line (None without a reference)."""
  empty_s, warm_s, reference_s, environment = [], [], [], None
  for _ in range(repeats):
    with tempfile.TemporaryDirectory(prefix="cold_start_cache_") as cache_dir:
      for times in (empty_s, warm_s):
        with tempfile.TemporaryDirectory(prefix="cold_start_workdir_") as workdir:
          command = prune_command(python, k, workdir, cache_dir, overrides)
          times.append(seconds_until_file(command, pathlib.Path(workdir, "masks.npz"),
                                          jax_env(), timeout_s))
    if torch_python:
      seconds, environment = reference_seconds(torch_python, ref_dir, k, batch_size, timeout_s)
      reference_s.append(seconds)
  return summarize_k(k, empty_s, warm_s, reference_s), environment


def run_cold_start(ks: Sequence[int] = KS, repeats: int = 3,
                   python: str = shlex.quote(sys.executable),
                   overrides: Sequence[str] = (), torch_python: str | None = None,
                   ref_dir: str = "third_party_ref", timeout_s: float = TIMEOUT_S
                   ) -> dict[str, Any]:
  """A 'cold_start' `result_record` with one `summarize_k` row per k in `ks`, in order.

  `python` and `torch_python` are command lines (split like a shell's) of the Python that runs
  prune_and_train.py and of one with torch that runs the reference from the authors' code in
  `ref_dir`; without `torch_python` the reference is not run. Its config records the settings,
  `os.cpu_count()` and, under 'reference_environment', the reference's torch version and
  threads. The reference runs the configuration's prune batch size, so `overrides` must keep
  ProsPr, SmallConvNet and Fashion-MNIST.

  Raises:
    ValueError: `repeats` < 1, or `overrides` name an unknown field or another method, model
      or dataset (before anything runs).
    RuntimeError: a measured process failed (`seconds_until_file`, `reference_seconds`).
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}.")
  config = prune_config(overrides)
  setting = (config.prune.method, config.model, config.dataset)
  if setting != ("prospr", "small_convnet", "fashion_mnist"):
    raise ValueError(f"The overrides give method, model, dataset {setting}; the reference runs "
                     "ProsPr on SmallConvNet with Fashion-MNIST's shape.")
  torch_command = shlex.split(torch_python) if torch_python else None
  rows, environment = [], None
  for k in ks:
    row, environment = measure_k(k, repeats, shlex.split(python), overrides,
                                 config.prune.batch_size, torch_command, ref_dir, timeout_s)
    rows.append(row)
  settings = {"ks": list(ks), "repeats": repeats, "overrides": list(overrides),
              "model": config.model, "batch_size": config.prune.batch_size,
              "cpu_count": os.cpu_count(), "reference": torch_python is not None,
              "reference_threads": REFERENCE_THREADS, "reference_environment": environment}
  return result_record.new_record("cold_start", settings, rows=rows)


def _seconds(value: float | None) -> str:
  return "-" if value is None else f"{value:.2f}"


def _ratio(value: float | None, goal: float) -> str:
  """'0.85 (met)' or '2.40 (missed)' against `goal`; '-' without a value."""
  if value is None:
    return "-"
  return f"{value:.2f} ({'met' if value <= goal else 'missed'})"


def format_cold_start(record: dict[str, Any]) -> str:
  """A `run_cold_start` record as a heading, the goals and a markdown table with one row per k:
  the median seconds of each side and the ratios to the reference, each marked met or missed."""
  cfg = record["config"]
  lines = [
      f"Cold time to a mask, {cfg['model']}, prune batch {cfg['batch_size']}, "
      f"{cfg['cpu_count']} CPUs, {provenance.describe_code_version(record['code'])}: seconds "
      f"from process start, median of {cfg['repeats']}.",
      f"Goals: warm cache <= {WARM_GOAL:g}x the reference, empty cache <= {EMPTY_GOAL:g}x.",
      "",
      "| k | empty cache (s) | warm cache (s) | reference (s) | warm / reference "
      "| empty / reference |",
      "|---:|---:|---:|---:|---:|---:|",
  ]
  for row in record["rows"]:
    lines.append(
        f"| {row['k']} | {_seconds(row['empty_median_s'])} | {_seconds(row['warm_median_s'])} "
        f"| {_seconds(row['reference_median_s'])} "
        f"| {_ratio(row['warm_over_reference'], WARM_GOAL)} "
        f"| {_ratio(row['empty_over_reference'], EMPTY_GOAL)} |")
  return "\n".join(lines)
