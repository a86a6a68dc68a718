"""Stops every process of a multi-process run within seconds, with one clear line, when one of
them dies (killed, out of memory, host down).

Without it the survivors of a dead peer either fail in their next collective (gloo: "Connection
closed by peer") and then abort in JAX's shutdown barrier, or wait for JAX's own heartbeat
timeout; either way they print about a hundred lines of C++ logs that never say which process
died. Here each process writes a counter to the run's key-value store (JAX's coordination
service, the one `jax.distributed.initialize` starts) every `_BEAT_S` seconds and reads the
others'. A process whose counter has not moved for `heartbeat_timeout_s` seconds, or a
coordinator that stops answering, ends this process with status 1 and one line saying which
process stopped, around which step, and that rerunning the same command on every host resumes
from the latest checkpoint. JAX's own heartbeat timeout is set `JAX_HEARTBEAT_MARGIN_S` longer
(`distributed.initialize_distributed`) so that this report comes first.

The watch reads a private attribute of JAX (`jax._src.distributed.global_state.client`), as
orbax does for its barriers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import jax

JAX_HEARTBEAT_MARGIN_S = 10
"""JAX declares a silent process dead this many seconds after the watch does."""
_BEAT_S = 1.0
"""How often each process writes its counter and reads the others', in seconds."""
_KEY = "prospr_jax/peer_watch/{}"
_LEFT = "left"
"""The value a process writes when it leaves the run normally (not a death)."""


class PeerWatch:
  """The watch of one process (see the module docstring). `step` is the training step this
  process last reached, for the report; set it as training goes on."""

  def __init__(self, heartbeat_timeout_s: int) -> None:
    self.step: int | None = None
    self._timeout_s = heartbeat_timeout_s
    self._stop = threading.Event()
    self._client = None
    self._thread: threading.Thread | None = None

  def start(self) -> None:
    """Starts beating and watching if this is a multi-process run (else does nothing)."""
    if jax.process_count() == 1:
      return
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top

    self._client = jax_distributed.global_state.client
    self._thread = threading.Thread(target=self._run, name="peer_watch", daemon=True)
    self._thread.start()

  def leave(self) -> None:
    """Stops the watch and tells the others this process left normally."""
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    with contextlib.suppress(Exception):  # the others may be gone already
      self._client.key_value_set(_KEY.format(jax.process_index()), _LEFT, allow_overwrite=True)

  def wait_for_verdict(self) -> None:
    """Gives the watch time to find a dead peer (then it ends the process) before an error
    raised in this process is reported: a collective fails at once when a peer dies."""
    if self._thread is not None:
      self._thread.join(self._timeout_s + 2 * _BEAT_S)

  def _run(self) -> None:
    me, others = jax.process_index(), [p for p in range(jax.process_count())
                                       if p != jax.process_index()]
    seen = {p: ("", time.monotonic()) for p in others}  # last value and when it changed
    beat = 0
    while not self._stop.wait(_BEAT_S):
      beat += 1
      try:
        self._client.key_value_set(_KEY.format(me), str(beat), allow_overwrite=True)
        values = {p: self._read(p) for p in others}
      except Exception as e:  # pylint: disable=broad-except  # the store is gone with process 0
        self._stop_process(0, f"the coordinator stopped answering ({type(e).__name__})")
        return
      now = time.monotonic()
      for p, value in values.items():
        if value == _LEFT:
          continue
        if value != seen[p][0]:
          seen[p] = (value, now)
        elif now - seen[p][1] > self._timeout_s:
          self._stop_process(p, f"no heartbeat for {self._timeout_s} s "
                                "(config.distributed.heartbeat_timeout_s)")
          return

  def _read(self, process: int) -> str:
    """`process`'s last counter, '' before its first beat."""
    try:
      return self._client.key_value_try_get(_KEY.format(process))
    except jax.errors.JaxRuntimeError as e:
      if str(e).startswith("NOT_FOUND"):
        return ""
      raise

  def _stop_process(self, dead: int, why: str) -> None:
    """Writes the one-line report to stderr and ends this process with status 1 (its main
    thread may be blocked in a collective that nothing in Python can interrupt)."""
    where = f" around step {self.step}" if self.step is not None else ""
    sys.stderr.write(
        f"ERROR: process {dead} of the {jax.process_count()}-process run stopped{where}: {why}. "
        f"Process {jax.process_index()} stops too. Rerun the same command on every host to "
        "resume from the latest checkpoint.\n")
    sys.stderr.flush()
    os._exit(1)


@contextlib.contextmanager
def watching_peers(heartbeat_timeout_s: int) -> Iterator[PeerWatch]:
  """Watches the other processes of the run while the block runs (see the module docstring).

  An exception raised in the block first gives the watch time to find a dead peer (which ends
  the process with its one-line report); if none is found it propagates unchanged. Leaving the
  block normally tells the other processes this one is done.
  """
  watch = PeerWatch(heartbeat_timeout_s)
  watch.start()
  try:
    yield watch
  except Exception:
    watch.wait_for_verdict()
    raise
  watch.leave()
