"""A run's data held on its devices: in-memory sets as `device_batches` splits, TF-free.

Data sets in `IN_MEMORY_SETS` (fixed-size images, small enough for device memory) are read
once per process into host memory (`host_split`, cached) and copied to every device of the
run's mesh; training, pruning and evaluation batches are then computed on the devices from
(seed, step) (`device_batches`), so a global batch does not depend on the number of devices
or processes. Other sets (ImageNet and other variable-size ones) use the tf.data pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prospr_jax.experiment.data import device_batches, in_memory
from prospr_jax.experiment.data.dataset_info import DatasetInfo
from prospr_jax.experiment.data.device_batches import Batching, DeviceEvalSet, DeviceSplit
from prospr_jax.tree_types import PyTree

IN_MEMORY_SETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
"""Data sets trained from device memory (`device_batches`) rather than tf.data."""
_TEST_SPLIT = "test"


def fits_in_memory(name: str) -> bool:
  """Whether data set `name` trains from device memory (`IN_MEMORY_SETS`)."""
  return name in IN_MEMORY_SETS


@functools.lru_cache(maxsize=4)
def host_split(name: str, split: str, data_dir: str | None) -> in_memory.InMemorySplit:
  """`in_memory.load_split(name, split, data_dir)`, read once per process (a sweep's runs
  share it; the arrays must not be modified)."""
  return in_memory.load_split(name, split, data_dir)


def dataset_info(name: str, data_dir: str | None) -> DatasetInfo:
  """The `DatasetInfo` of `name`: from its host splits for in-memory sets (no TensorFlow),
  else from TFDS (`input_pipeline.get_dataset_info`).

  Raises:
    ValueError, FileNotFoundError: as `in_memory.load_split` or `get_dataset_info`.
  """
  if not fits_in_memory(name):
    # pylint: disable-next=g-import-not-at-top (TF only for sets read with tf.data)
    from prospr_jax.experiment.data import input_pipeline
    return input_pipeline.get_dataset_info(name, data_dir)
  train, test = host_split(name, "train", data_dir), host_split(name, _TEST_SPLIT, data_dir)
  height, width, channels = train.images.shape[1:]
  return DatasetInfo(name=name, num_classes=train.num_classes,
                     image_shape=(height, width, channels), num_train=len(train.labels),
                     num_test=len(test.labels))


@dataclasses.dataclass(frozen=True)
class DeviceData:
  """A data set's training split and padded test split, on the devices.

  Attributes:
    train: the training split (uint8 pixels, normalized per batch).
    test: the test split in whole batches of the evaluation batch size.
  """

  train: DeviceSplit
  test: DeviceEvalSet


def put_data(name: str, data_dir: str | None, eval_batch_size: int,
             sharding: jax.sharding.Sharding | None = None) -> DeviceData:
  """Copies the training and test splits of in-memory set `name` to `sharding`'s devices
  (`None`: the default device; a mesh's `NamedSharding(mesh, PartitionSpec())` replicates)."""
  return DeviceData(
      train=device_batches.put_on_device(host_split(name, "train", data_dir), sharding),
      test=device_batches.put_eval_on_device(host_split(name, _TEST_SPLIT, data_dir),
                                             eval_batch_size, sharding))


def _shardings(mesh: Mesh, batch_axis: str) -> tuple[NamedSharding, NamedSharding]:
  """(replicated, batch rows split over `batch_axis`) shardings of `mesh`."""
  return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(batch_axis))


@functools.cache
def _batch_fn(batching: Batching, mesh: Mesh, batch_axis: str) -> Callable:
  """Jitted `(split, key, order, step) -> (order, batch)`, the batch split over `batch_axis`."""
  replicated, rows = _shardings(mesh, batch_axis)

  def batch(split, key, order, step):
    return device_batches.single_run_batch(split, batching, key, order, step)

  return jax.jit(batch, out_shardings=(replicated, rows))


@functools.cache
def _eval_batch_fn(mesh: Mesh) -> Callable:
  """Jitted `device_batches.eval_batch`, the batch replicated on every device of `mesh`."""
  return jax.jit(device_batches.eval_batch,
                 out_shardings=NamedSharding(mesh, PartitionSpec()))


def train_batches(split: DeviceSplit, batching: Batching, seed: int, mesh: Mesh,
                  batch_axis: str, first_step: int = 0) -> Iterator[PyTree]:
  """The training batches of steps `first_step, first_step + 1, ...` of the run seeded `seed`
  (order and augmentation from `device_batches.run_key(seed)`), rows split over `batch_axis`
  of `mesh`: `{'image': float32 [B, H, W, C], 'label': int32 [B]}` each (endless)."""
  replicated = _shardings(mesh, batch_axis)[0]
  key = jax.device_put(device_batches.run_key(seed), replicated)
  order = jax.device_put(device_batches.initial_order(split.num_examples), replicated)
  fn = _batch_fn(batching, mesh, batch_axis)
  for step in itertools.count(first_step):
    order, batch = fn(split, key, order, step)
    yield batch


def eval_batches(eval_set: DeviceEvalSet, mesh: Mesh) -> Iterator[PyTree]:
  """Every batch of `eval_set` (with its 'mask'), replicated on every device of `mesh`.

  Each device evaluates whole batches (redundant on several devices, but without collectives:
  in two-process CPU runs, sharded evaluation batches deadlocked in an XLA all-gather).
  """
  fn = _eval_batch_fn(mesh)
  return (fn(eval_set, index) for index in range(eval_set.num_batches))
