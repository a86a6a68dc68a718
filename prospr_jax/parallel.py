"""Data parallelism with `jax.sharding`: a 1-D 'data' mesh over all devices of all processes.

Batches are sharded along their leading axis; params, optimizer state and masks are
replicated. Jitted functions then run SPMD over the mesh and XLA inserts the gradient
all-reduce, so results do not depend on the number of devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
DATA_AXIS = "data"


def initialize_distributed(enabled: bool) -> None:
  """Calls `jax.distributed.initialize()` (multi-host: coordinator from the environment)."""
  if enabled:
    jax.distributed.initialize()


def data_mesh() -> Mesh:
  """A mesh with one axis, 'data', over every device of every process.

  The axis is `Auto`: XLA propagates the batch sharding through the model (recent JAX makes
  `Explicit` axes by default, which would make every op's output sharding a type to spell out).
  """
  return jax.make_mesh(
      (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def check_batch_size(per_process_batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the per-process batch divides evenly over the local devices."""
  local = mesh.local_mesh.size
  if per_process_batch_size % local:
    raise ValueError(
        f"The per-process batch size {per_process_batch_size} must be divisible by the number "
        f"of local devices ({local})."
    )


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Global arrays from this process's numpy batch, split along axis 0 over the 'data' axis."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of `tree` on all devices of `mesh` (fully replicated)."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
