"""Runs a group of processes (e.g. the processes of one multi-process JAX run) and tells a hang
from a slow run on a loaded machine.

A group *hangs* when its processes, all together, use less than `STALL_CPU_S` of CPU time in
`stall_s` seconds while none has exited: deadlocked processes wait and use no CPU, slow ones
keep using it. A hung group gets SIGABRT, which makes Python print every thread's stack
(`PYTHONFAULTHANDLER=1` is set in `env`), and `Hang` carries those stacks. A process that exits
with an error stops the group at once (its peers would wait for it in a collective). Linux only
(CPU times from /proc).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

STALL_CPU_S = 0.5
_TICK = os.sysconf("SC_CLK_TCK")


class Hang(Exception):
  """The group stopped using CPU before it finished; the message holds the processes' stacks."""


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
  """User + system CPU seconds of process `pid` (all its threads), 0 if it is gone."""
  try:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
  except FileNotFoundError:
    return 0.0
  fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
  return (int(fields[11]) + int(fields[12])) / _TICK


def _tail(path: pathlib.Path, chars: int = 4000) -> str:
  return path.read_text(errors="replace")[-chars:]


def run(commands: Sequence[Sequence[str]], env: dict[str, str], logdir: pathlib.Path, *,
        stall_s: float = 180.0,
        stop_when: Callable[[], bool] | None = None) -> list[tuple[str, str]]:
  """Runs `commands` at once; returns their (stdout, stderr) once all exited with status 0.

  Args:
    commands: one argv per process.
    env: their environment (`PYTHONFAULTHANDLER=1` is added).
    logdir: where `<i>.out` and `<i>.err` of process `i` are written.
    stall_s: a group that uses less than `STALL_CPU_S` CPU seconds in this long is hung.
    stop_when: polled every 50 ms; once it returns True every process gets SIGKILL and `run`
      returns (the processes' output so far).

  Raises:
    Hang: the group hung (see the module docstring); the message has every process's stacks.
    AssertionError: a process exited with a non-zero status (its stderr is in the message).
  """
  logdir.mkdir(parents=True, exist_ok=True)
  env = dict(env, PYTHONFAULTHANDLER="1")
  procs = []
  for i, command in enumerate(commands):
    with open(logdir / f"{i}.out", "w") as out, open(logdir / f"{i}.err", "w") as err:
      procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
  errs = [logdir / f"{i}.err" for i in range(len(procs))]
  try:
    last_cpu, last_change = -1.0, time.monotonic()
    while any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if failed:
        raise AssertionError(f"process {failed[0]} exited with status "
                             f"{procs[failed[0]].returncode}:\n{_tail(errs[failed[0]])}")
      if stop_when is not None and stop_when():
        break
      cpu = sum(_cpu_seconds(p.pid) for p in procs if p.poll() is None)
      if cpu - last_cpu >= STALL_CPU_S:
        last_cpu, last_change = cpu, time.monotonic()
      elif time.monotonic() - last_change > stall_s:
        for p in procs:
          if p.poll() is None:
            p.send_signal(signal.SIGABRT)
        for p in procs:
          p.wait()
        raise Hang("\n".join(f"--- process {i} (status {p.returncode}):\n{_tail(err)}"
                             for i, (p, err) in enumerate(zip(procs, errs))))
      time.sleep(0.05)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  if stop_when is None:
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, f"process {failed[0]} failed:\n{_tail(errs[failed[0]])}"
  return [((logdir / f"{i}.out").read_text(errors="replace"), err.read_text(errors="replace"))
          for i, err in enumerate(errs)]
