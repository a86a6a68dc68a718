"""Training and evaluation batches computed on the device from a split held there.

A split small enough for device memory (`in_memory.load_split`) is put on the device once, as
uint8 pixels (`put_on_device`). A jitted training step then computes its own batch from the
step index: no host round trip and no tf.data per step, so many runs can share one program and
one copy of the data (`prospr_jax.experiment.population`).

Order. Every run has a raw PRNG key (`jax.random.PRNGKey(seed)`); epoch `e` visits the
examples in the order `jax.random.permutation(fold_in(fold_in(key, 0), e), N)`. Step `s`
belongs to epoch `s // steps_per_epoch` and takes that permutation's slice
`[(s % steps_per_epoch) * batch_size, ... + batch_size)`. Batches never cross an epoch
boundary: the examples past `steps_per_epoch * batch_size` in each epoch's permutation (the
last `N % batch_size` with the default steps per epoch; different ones every epoch) are not
visited in that epoch. A permutation of 60000 costs tens of milliseconds on a
CPU, far more than a small model's step, so it is computed once per epoch and carried between
steps (`EpochOrder`, `advance_order`).

Augmentation (`augment=True`), with the semantics of the tf.data pipeline
(`input_pipeline.py`): grayscale images are randomly cropped from the image zero-padded by 2
pixels, never flipped; 3-channel images are randomly cropped from the image zero-padded by 4
and flipped left-right with probability 1/2. Padding is applied to raw pixels, before
normalization. The random draws of step `s` come from `fold_in(fold_in(key, 1), s)`, so a
batch is a function of (key, step) alone. The draws are JAX's, not TF's: the same seed gives
different batches here and in `input_pipeline.train_batches`.

Normalization: pixels are scaled to [0, 1], then normalized with the data set's per-channel
mean and std (`normalization.MEAN_STD`; sets not listed stay in [0, 1]).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prospr_jax.experiment.data.in_memory import InMemorySplit
from prospr_jax.experiment.data.normalization import MEAN_STD

_ORDER_STREAM = 0  # fold_in(key, _ORDER_STREAM): the per-epoch permutations
_AUGMENT_STREAM = 1  # fold_in(key, _AUGMENT_STREAM): the per-step augmentation draws
_COLOR_PAD, _GRAY_PAD = 4, 2  # zero padding before the random crop, in pixels


@struct.dataclass
class DeviceSplit:
  """A split on the device: raw pixels, labels and how to normalize them.

  Attributes:
    images: uint8 [N, H, W, C].
    labels: int32 [N].
    mean, std: per-channel constants for pixels in [0, 1] (static, part of the tree's
      structure).
  """

  images: jax.Array
  labels: jax.Array
  mean: tuple[float, ...] = struct.field(pytree_node=False)
  std: tuple[float, ...] = struct.field(pytree_node=False)

  @property
  def num_examples(self) -> int:
    return self.images.shape[0]


@struct.dataclass
class DeviceEvalSet:
  """An evaluation split on the device, zero-padded to whole batches of `batch_size`.

  Attributes:
    split: the padded split, `num_batches * batch_size` examples.
    mask: bool [num_batches * batch_size]; False marks the padding.
    batch_size: examples per evaluation batch (static).
  """

  split: DeviceSplit
  mask: jax.Array
  batch_size: int = struct.field(pytree_node=False)

  @property
  def num_batches(self) -> int:
    return self.split.num_examples // self.batch_size


@struct.dataclass
class EpochOrder:
  """The order in which one or more runs visit the examples in their current epoch.

  Attributes:
    epoch: int32 [*runs]: the epoch that `order` belongs to (-1: none yet).
    order: int32 [*runs, N]: a permutation of the example indices per run.
  """

  epoch: jax.Array
  order: jax.Array


@dataclasses.dataclass(frozen=True)
class Batching:
  """How training batches are cut from a split (hashable: a static argument of jit).

  Attributes:
    batch_size: examples per batch.
    steps_per_epoch: batches per epoch, at most `num_examples // batch_size`.
    augment: apply the training augmentation (module docstring).
  """

  batch_size: int
  steps_per_epoch: int
  augment: bool = True

  @classmethod
  def for_split(cls, num_examples: int, batch_size: int, augment: bool = True,
                steps_per_epoch: int | None = None) -> Batching:
    """Batching of a split of `num_examples`; `steps_per_epoch=None`: every whole batch.

    Raises:
      ValueError: `batch_size` not in [1, num_examples], or `steps_per_epoch` not in
        [1, num_examples // batch_size].
    """
    if not 1 <= batch_size <= num_examples:
      raise ValueError(f"batch_size={batch_size} must be in [1, {num_examples}] (the split).")
    whole = num_examples // batch_size
    steps_per_epoch = whole if steps_per_epoch is None else steps_per_epoch
    if not 1 <= steps_per_epoch <= whole:
      raise ValueError(f"steps_per_epoch={steps_per_epoch} must be in [1, {whole}] "
                       f"({num_examples} examples in batches of {batch_size}).")
    return cls(batch_size, steps_per_epoch, augment)


def put_on_device(split: InMemorySplit, sharding: jax.sharding.Sharding | None = None
                  ) -> DeviceSplit:
  """Copies `split`'s pixels (uint8) and labels (int32) to the device(s) once.

  Args:
    split: a whole split in host memory.
    sharding: where the arrays go (e.g. `NamedSharding(mesh, PartitionSpec())` to replicate
      them over a mesh); `None`: the default device.
  """
  channels = split.images.shape[-1]
  mean, std = MEAN_STD.get(split.name, ((0.0,) * channels, (1.0,) * channels))
  images, labels = jax.device_put((split.images, split.labels.astype(np.int32)), sharding)
  return DeviceSplit(images, labels, tuple(mean), tuple(std))


def put_eval_on_device(split: InMemorySplit, batch_size: int,
                       sharding: jax.sharding.Sharding | None = None) -> DeviceEvalSet:
  """`split` on the device as `ceil(N / batch_size)` batches, the tail padded with zero images
  (label 0, `mask` False), so that one jitted program evaluates every batch.

  Raises:
    ValueError: `batch_size < 1`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be at least 1.")
  num = len(split.labels)
  pad = -num % batch_size
  padded = InMemorySplit(
      split.name, np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]),
                                                         np.uint8)]),
      np.concatenate([split.labels, np.zeros(pad, split.labels.dtype)]), split.num_classes)
  mask = jax.device_put(np.arange(num + pad) < num, sharding)
  return DeviceEvalSet(put_on_device(padded, sharding), mask, batch_size)


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
  """uint8 [..., C] pixels -> float32 `(x / 255 - mean) / std`, per channel."""
  scaled = images.astype(jnp.float32) / 255.0
  return (scaled - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def run_key(seed: int) -> jax.Array:
  """The raw PRNG key (uint32 [2]) that seeds one run's data order and augmentation."""
  return jax.random.PRNGKey(seed)


def initial_order(num_examples: int, num_runs: int | None = None) -> EpochOrder:
  """An order that belongs to no epoch yet, for one run (`num_runs=None`) or `num_runs` runs
  (leading axis); the first `advance_order` replaces it."""
  runs = () if num_runs is None else (num_runs,)
  return EpochOrder(epoch=jnp.full(runs, -1, jnp.int32),
                    order=jnp.zeros((*runs, num_examples), jnp.int32))


def epoch_permutation(key: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
  """int32 [num_examples]: the order of epoch `epoch` of the run with raw key `key` [2]."""
  epoch_key = jax.random.fold_in(jax.random.fold_in(key, _ORDER_STREAM), epoch)
  return jax.random.permutation(epoch_key, num_examples).astype(jnp.int32)


def advance_order(order: EpochOrder, keys: jax.Array, step: jax.Array,
                  steps_per_epoch: int) -> EpochOrder:
  """The order of `step`'s epoch for every run: `order` if it already is, else the epoch's
  permutations.

  Call it outside any `vmap` over runs: its one `lax.cond` decides for all runs at once, so
  the permutations are computed once per epoch (a vmapped cond would compute them every step).

  Args:
    order: the runs' current orders, leading shape `runs` (e.g. () or (P,)).
    keys: raw keys, uint32 [*runs, 2].
    step: int scalar, the step about to be taken (0-based).
    steps_per_epoch: batches per epoch.
  """
  epoch = jnp.asarray(step // steps_per_epoch, jnp.int32)
  runs = order.epoch.shape
  num_examples = order.order.shape[-1]

  def permutations() -> EpochOrder:
    flat = jax.vmap(lambda key: epoch_permutation(key, epoch, num_examples))(
        keys.reshape(-1, keys.shape[-1]))
    return EpochOrder(jnp.full(runs, epoch, jnp.int32), flat.reshape(*runs, num_examples))

  return jax.lax.cond(jnp.all(order.epoch == epoch), lambda: order, permutations)


def augment_images(images: jax.Array, key: jax.Array) -> jax.Array:
  """Random crops of the zero-padded images (and flips, for 3 channels), as uint8.

  Args:
    images: uint8 [B, H, W, C], C = 1 (pad 2, no flip) or 3 (pad 4, random flip).
    key: raw key of this batch's draws.
  """
  batch, height, width, channels = images.shape
  color = channels == 3
  pad = _COLOR_PAD if color else _GRAY_PAD
  crop_key, flip_key = jax.random.split(key)
  corners = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crops = jax.vmap(lambda image, corner: jax.lax.dynamic_slice(
      image, (corner[0], corner[1], 0), (height, width, channels)))(padded, corners)
  if not color:
    return crops
  flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
  return jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)


def train_batch(split: DeviceSplit, batching: Batching, key: jax.Array, order: jax.Array,
                step: jax.Array) -> dict[str, jax.Array]:
  """The training batch of step `step` of one run, computed on the device.

  Args:
    split: the training split on the device.
    batching: batch size, steps per epoch, augmentation.
    key: the run's raw key, uint32 [2] (`run_key`).
    order: int32 [N], the run's permutation for `step`'s epoch (`advance_order(...).order`).
    step: int scalar, the 0-based step index.

  Returns:
    `{'image': float32 [batch_size, H, W, C] normalized, 'label': int32 [batch_size]}`.
  """
  start = (step % batching.steps_per_epoch) * batching.batch_size
  indices = jax.lax.dynamic_slice_in_dim(order, start, batching.batch_size)
  images = split.images[indices]
  if batching.augment:
    images = augment_images(images, jax.random.fold_in(
        jax.random.fold_in(key, _AUGMENT_STREAM), step))
  return {"image": normalize(images, split.mean, split.std), "label": split.labels[indices]}


def single_run_batch(split: DeviceSplit, batching: Batching, key: jax.Array, order: EpochOrder,
                     step: jax.Array) -> tuple[EpochOrder, dict[str, jax.Array]]:
  """One run's order and training batch of step `step`: `advance_order` then `train_batch`.

  Args:
    order: the run's order after its previous step (`initial_order(N)` before the first).
    Others: as `train_batch`.
  """
  order = advance_order(order, key, step, batching.steps_per_epoch)
  return order, train_batch(split, batching, key, order.order, step)


def eval_batch(eval_set: DeviceEvalSet, index: jax.Array) -> dict[str, jax.Array]:
  """Evaluation batch `index` (< `num_batches`), unaugmented.

  Returns:
    `{'image': float32 [batch_size, H, W, C] normalized, 'label': int32 [batch_size],
    'mask': bool [batch_size]}`; sum metrics weighted by `mask`.
  """
  start = index * eval_set.batch_size
  take = lambda x: jax.lax.dynamic_slice_in_dim(x, start, eval_set.batch_size)
  split = eval_set.split
  return {"image": normalize(take(split.images), split.mean, split.std),
          "label": take(split.labels), "mask": take(eval_set.mask)}
