"""Data parallelism with `jax.sharding`: a 1-D 'data' mesh over all devices of all processes.

Batches are sharded along their leading axis; params, optimizer state and masks are
replicated. Jitted functions then run SPMD over the mesh and XLA inserts the gradient
all-reduce, so results do not depend on the number of devices or processes. Every process
feeds the rows of each global batch that its devices hold (`process_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from prospr_jax.tree_types import PyTree

DATA_AXIS = "data"
CLUSTER_FIELDS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")
"""The `jax.distributed.initialize` arguments that `config.distributed` may set."""


def initialize_distributed(config: Mapping[str, Any]) -> None:
  """Joins a multi-process run if `config['enabled']` (`config`: `config.distributed`).

  Calls `jax.distributed.initialize` with the fields of `CLUSTER_FIELDS` that are not None;
  those left None are detected from the environment (Cloud TPU, SLURM, Open MPI, ...).

  Raises:
    ValueError: a cluster field is set while `enabled` is False (it would be ignored).
  """
  given = {k: config[k] for k in CLUSTER_FIELDS if config[k] is not None}
  if not config["enabled"]:
    if given:
      raise ValueError(
          f"config.distributed.{{{', '.join(given)}}} set but config.distributed.enabled is "
          "False; add --config.distributed.enabled=True to start a multi-process run."
      )
    return
  if "local_device_ids" in given:
    given["local_device_ids"] = list(given["local_device_ids"])
  jax.distributed.initialize(**given)
  _connect_collectives(data_mesh())


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
