"""Where a single run's batches come from: its devices (in-memory sets) or tf.data (`RunData`).

Both sources give global batches sharded over the 'data' axis of the run's mesh that do not
depend on the number of devices or processes; they differ in their order and augmentation
draws (JAX's on the devices, TF's in tf.data), so the same seed trains differently on each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prospr_jax.experiment import distributed, run_plan
from prospr_jax.experiment.data import device_data
from prospr_jax.experiment.data.device_batches import Batching
from prospr_jax.tree_types import PyTree


class RunData(Protocol):
  """A run's training, evaluation and pruning batches, sharded over its mesh."""

  def train_batches(self, first_step: int) -> Iterator[PyTree]:
    """Training batches of steps `first_step + 1, ...` (1-based), endless."""

  def eval_batches(self) -> Iterator[PyTree]:
    """One pass over the test split, with 'mask' marking the real examples."""

  def pruning_batches(self) -> list[PyTree] | None:
    """The batches the pruning method scores on (`None` if it takes none): `num_batches`
    unaugmented batches of the pruning batch size, seeded `seed + 1`."""


class DeviceRunData:
  """`RunData` of an in-memory set, replicated on every device of the mesh."""

  def __init__(self, plan: run_plan.RunPlan, mesh: Mesh,
               data: device_data.DeviceData | None = None):
    """`data`: the set already replicated on `mesh` (None: copied there now)."""
    self._plan, self._mesh = plan, mesh
    self._data = data or device_data.put_data(plan.data.info.name, plan.data.data_dir,
                                              plan.train.eval_batch_size,
                                              NamedSharding(mesh, PartitionSpec()))

  def _batches(self, batching: Batching, seed: int, first_step: int) -> Iterator[PyTree]:
    return device_data.train_batches(self._data.train, batching, seed, self._mesh,
                                     distributed.DATA_AXIS, first_step)

  def train_batches(self, first_step: int) -> Iterator[PyTree]:
    tp = self._plan.train
    batching = Batching(tp.batch_size, tp.steps_per_epoch, self._plan.data.augment)
    return self._batches(batching, self._plan.seed, first_step)

  def eval_batches(self) -> Iterator[PyTree]:
    return device_data.eval_batches(self._data.test, self._mesh)

  def pruning_batches(self) -> list[PyTree] | None:
    prune = self._plan.prune
    if not prune.num_batches:
      return None
    batching = Batching.for_split(self._data.train.num_examples, prune.batch_size, augment=False)
    return list(itertools.islice(self._batches(batching, self._plan.seed + 1, 0),
                                 prune.num_batches))


class TfRunData:
  """`RunData` from the tf.data pipeline (`data.input_pipeline`; imports TensorFlow)."""

  def __init__(self, plan: run_plan.RunPlan, mesh: Mesh):
    self._plan, self._mesh = plan, mesh

  def _stream(self, batch_size: int, seed: int, augment: bool) -> Iterator[PyTree]:
    # pylint: disable-next=g-import-not-at-top (TF only for sets read with tf.data)
    from prospr_jax.experiment.data import input_pipeline
    data = self._plan.data
    stream = input_pipeline.train_batches(
        data.info.name, batch_size=batch_size, seed=seed, data_dir=data.data_dir,
        augment=augment, rows=distributed.process_rows(batch_size, self._mesh))
    return (distributed.shard_batch(b, self._mesh) for b in stream)

  def train_batches(self, first_step: int) -> Iterator[PyTree]:
    stream = self._stream(self._plan.train.batch_size, self._plan.seed, self._plan.data.augment)
    return itertools.islice(stream, first_step, None)  # the data position of a resumed run

  def eval_batches(self) -> Iterator[PyTree]:
    # pylint: disable-next=g-import-not-at-top (TF only for sets read with tf.data)
    from prospr_jax.experiment.data import input_pipeline
    rows = distributed.process_rows(self._plan.train.eval_batch_size, self._mesh)
    return (distributed.shard_batch(b, self._mesh) for b in input_pipeline.eval_batches(
        self._plan.data.info.name, batch_size=rows.stop - rows.start,
        data_dir=self._plan.data.data_dir))

  def pruning_batches(self) -> list[PyTree] | None:
    prune = self._plan.prune
    if not prune.num_batches:
      return None
    stream = self._stream(prune.batch_size, self._plan.seed + 1, augment=False)
    return list(itertools.islice(stream, prune.num_batches))


def run_data(plan: run_plan.RunPlan, mesh: Mesh) -> RunData:
  """The device source for in-memory sets (`device_data.IN_MEMORY_SETS`), else tf.data."""
  if device_data.fits_in_memory(plan.data.info.name):
    return DeviceRunData(plan, mesh)
  return TfRunData(plan, mesh)
