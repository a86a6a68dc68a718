"""Data parallelism with `jax.sharding`: a 1-D 'data' mesh over all devices of all processes.

Batches are sharded along their leading axis; params, optimizer state and masks are
replicated. Jitted functions then run SPMD over the mesh and XLA inserts the gradient
all-reduce, so results do not depend on the number of devices or processes. Every process
feeds the rows of each global batch that its devices hold (`process_rows`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prospr_jax.experiment import config_checks, peer_watch
from prospr_jax.tree_types import PyTree

DATA_AXIS = "data"
CLUSTER_FIELDS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")
"""The `jax.distributed.initialize` arguments that `config.distributed` may set."""
TIMEOUT_FIELDS = ("initialization_timeout_s", "heartbeat_timeout_s")
"""The fields of `config.distributed` that bound the waits for other processes, in seconds."""
DISTRIBUTED_FIELDS = ("enabled", *CLUSTER_FIELDS, *TIMEOUT_FIELDS)
"""The fields of `config.distributed`."""
_JAX_TIMEOUT_MARGIN_S = 10
"""JAX itself gives up this long after `initialization_timeout_s` (it aborts the process with a
C++ stack trace), so that `_exit_unless_joined` reports first."""


def check_fields(config: Mapping[str, Any]) -> None:
  """Raises ValueError naming an unknown field of `config.distributed` or a timeout below 1 s,
  TypeError a timeout that is not an integer."""
  config_checks.check_known_fields("distributed", config, DISTRIBUTED_FIELDS)
  for name in TIMEOUT_FIELDS:
    config_checks.check_int(f"distributed.{name}", config[name], 1)


def initialize_distributed(config: Mapping[str, Any]) -> None:
  """Joins a multi-process run if `config['enabled']` (`config`: `config.distributed`); a
  process that has joined already (a sweep's later runs) stays in its run.

  Calls `jax.distributed.initialize` with the fields of `CLUSTER_FIELDS` that are not None;
  those left None are detected from the environment (Cloud TPU, SLURM, Open MPI, ...). A
  process that has not joined every other one within `initialization_timeout_s` seconds exits
  with status 1 after one message (`_exit_unless_joined`). Once joined, a process that sends no
  heartbeat for `heartbeat_timeout_s` seconds (killed, host down) stops the others: with one
  line inside `peer_watch.watching_peers`, else through JAX's own heartbeat timeout
  (`peer_watch.JAX_HEARTBEAT_MARGIN_S` later).

  Raises:
    ValueError: a cluster field is set while `enabled` is False (it would be ignored); a bad
      field (`check_fields`).
  """
  check_fields(config)
  given = {k: config[k] for k in CLUSTER_FIELDS if config[k] is not None}
  if config["enabled"] and jax.distributed.is_initialized():
    return  # joined by an earlier run of this process (a sweep trains many)
  if not config["enabled"]:
    if given:
      raise ValueError(
          f"config.distributed.{{{', '.join(given)}}} set but config.distributed.enabled is "
          "False; add --config.distributed.enabled=True to start a multi-process run."
      )
    return
  if "local_device_ids" in given:
    given["local_device_ids"] = list(given["local_device_ids"])
  timeout_s = config["initialization_timeout_s"]
  watchdog = threading.Timer(timeout_s, _exit_unless_joined, (config,))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        **given, initialization_timeout=timeout_s + _JAX_TIMEOUT_MARGIN_S,
        heartbeat_timeout_seconds=config["heartbeat_timeout_s"] + peer_watch.JAX_HEARTBEAT_MARGIN_S)
  finally:
    watchdog.cancel()
  _connect_collectives(data_mesh())


def not_joined_message(config: Mapping[str, Any]) -> str:
  """What a process that could not join the run within `initialization_timeout_s` reports:
  the coordinator address, which processes it waited for, and how to start them."""
  address = config["coordinator_address"] or "(detected from the environment)"
  num_processes, process_id = config["num_processes"], config["process_id"]
  if process_id == 0 and num_processes is not None:
    waited_for = f"processes {list(range(1, num_processes))} did not all connect to it"
  elif process_id is not None:
    waited_for = "the coordinator (process 0) or another process did not connect"
  else:
    waited_for = "not every process connected"
  return (
      f"Process {process_id if process_id is not None else '?'} could not join the "
      f"{num_processes or '?'}-process run within {config['initialization_timeout_s']} s "
      f"(config.distributed.initialization_timeout_s): coordinator {address}; {waited_for}. "
      "Start the same command on every host at about the same time, each with its own "
      "--config.distributed.process_id, and check that the coordinator address is reachable "
      "from every host (or raise the timeout)."
  )


def _exit_unless_joined(config: Mapping[str, Any]) -> None:
  """Writes `not_joined_message(config)` to stderr and ends the process with status 1 (the
  main thread is blocked inside JAX's connection, which nothing in Python can interrupt)."""
  sys.stderr.write(f"ERROR: {not_joined_message(config)}\n")
  sys.stderr.flush()
  os._exit(1)


def _connect_collectives(mesh: Mesh) -> None:
  """Runs the cross-process collectives of a run once, while all processes are in step.

  XLA:CPU (gloo) connects a set of devices at the first collective they run together and
  gives up if the processes get there more than ~30 s apart, which uneven start-up or compile
  times on a loaded machine can cause. `jax.distributed.initialize` returns on all processes
  together; right after it, one all-reduce over `mesh` (as in training) and one all-gather
  across processes (as in `multihost_utils` and orbax's barriers) connect every device set the
  run uses.
  """
  ones = shard_batch(np.ones(mesh.local_mesh.size, np.float32), mesh)
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)
  if int(total) != mesh.size:
    raise RuntimeError(f"An all-reduce over {mesh.size} devices gave {int(total)}.")
  multihost_utils.sync_global_devices("prospr_jax.experiment.distributed._connect_collectives")


def data_mesh() -> Mesh:
  """A mesh with one axis, 'data', over every device of every process.

  The axis is `Auto`: XLA propagates the batch sharding through the model (recent JAX makes
  `Explicit` axes by default, which would make every op's output sharding a type to spell out).
  """
  return jax.make_mesh(
      (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the global batch divides evenly over all devices of `mesh`."""
  if global_batch_size % mesh.size:
    raise ValueError(
        f"The batch size {global_batch_size} (global, over all processes) must be divisible by "
        f"the number of devices ({mesh.size})."
    )


def process_rows(global_batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch sharded over `mesh` that this process's devices hold."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  held = sorted(
      (index[0].indices(global_batch_size)[:2]
       for index in sharding.addressable_devices_indices_map((global_batch_size,)).values())
  )
  for (_, stop), (start, _) in zip(held, held[1:]):
    if stop != start:
      raise ValueError(f"This process's devices hold non-contiguous batch rows: {held}.")
  return slice(held[0][0], held[-1][1])


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Global arrays from this process's numpy batch, split along axis 0 over the 'data' axis."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of `tree` on all devices of `mesh` (fully replicated).

  Every process must pass the same values (it is not checked: `jax.device_put` would compare
  them across processes, with one all-gather and one compilation per leaf shape).
  """
  sharding = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
  )


def to_host(tree: PyTree) -> PyTree:
  """Every leaf of `tree` as one numpy array of its global value, on every process.

  A leaf whose shards lie on other processes' devices too is all-gathered
  (`multihost_utils.process_allgather`): a collective, so every process must call this with
  arrays of the same shapes and shardings, in the same order.
  """
  def fetch(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(fetch, tree)
