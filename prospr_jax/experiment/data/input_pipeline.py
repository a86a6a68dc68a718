"""tf.data input pipelines for image classification, yielding numpy batches for JAX.

Data sets:

* `fashion_mnist`: the offline `fashion_mnist_local` builder (Debian's IDX files,
  see `fashion_mnist_local.py`), prepared into `data_dir` on first use (~7 s).
* `mnist`, `cifar10`, `cifar100`, `imagenet2012`, and any other TFDS image
  classification data set (features `image` and `label`): read with
  `tfds.builder(name, data_dir=data_dir)`. They must already be prepared in
  `data_dir`; nothing is ever downloaded.

`data_dir=None` means TFDS's default (`~/tensorflow_datasets`, or `$TFDS_DATA_DIR`).

Preprocessing, by the kind of image:

* fixed-size color images (CIFAR-10/100, other 32x32 RGB sets): training
  augmentation is a random 32x32 crop of the image zero-padded by 4 pixels plus a
  random horizontal flip.
* fixed-size grayscale images (MNIST, Fashion-MNIST): random crop of the image
  zero-padded by 2 pixels, no flip (digits and letters are not mirror-symmetric;
  one rule for all grayscale sets).
* variable-size images (ImageNet and the like): training takes an Inception-style
  random resized crop (8%-100% of the area, aspect ratio 3/4-4/3) resized to
  224x224 plus a random flip; evaluation resizes the shorter side to 256 and takes
  the central 224x224 crop.

Pixels are then scaled to [0, 1] and normalized with the data set's per-channel
mean and std (`MEAN_STD`); data sets without known constants stay in [0, 1].

Multi-host: `train_batches` takes the global batch size and the rows of every
global batch that this process feeds (`rows`); every process runs the same
shuffle of the whole split and keeps and augments only its own rows, so a global
batch holds the same examples in the same order, with the same augmentation,
whatever the number of processes. Sets small enough to cache in memory are
decoded once in full; larger ones are decoded only for this process's rows. `eval_batches` reads this
process's slice of the evaluation split (`tfds.split_for_jax_process`); metrics
are sums over all examples, so their order does not matter.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from prospr_jax.experiment.data.dataset_info import DatasetInfo
from prospr_jax.experiment.data.fashion_mnist_local import FashionMnistLocal
from prospr_jax.experiment.data.normalization import MEAN_STD

try:
  # TF only feeds data; the accelerators belong to JAX.
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:
  pass  # TF was initialized before this import; its device choice stands.

SUPPORTED = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet2012")

_EVAL_SPLIT = {"imagenet2012": "validation"}  # Default: "test".
_CROP_SIZE = 224  # Variable-size images: side of the square model input.
_RESIZE_SIZE = 256  # Variable-size images: shorter side before the eval crop.
_CACHE_BYTES = 1 << 30  # Decoded training sets up to this size are cached in memory.
_SHUFFLE_BUFFER = 10_000  # Shuffle buffer for sets too large to cache.


def _not_prepared_message(name: str, builder: tfds.core.DatasetBuilder,
                          data_dir: str | None) -> str:
  where = data_dir if data_dir is not None else "the TFDS default data_dir"
  msg = (f"Data set {name!r} is not prepared under data_dir={where} (looked for "
         f"{builder.data_dir}); this pipeline never downloads. ")
  if name == "imagenet2012":
    return msg + (
        "ImageNet needs a manual download: put ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual, then run "
        "`tfds build imagenet2012 --data_dir=DATA_DIR` and pass data_dir=DATA_DIR.")
  return msg + (f"On a machine with internet run `tfds build {name} --data_dir=DATA_DIR` "
                "and copy DATA_DIR here (or pass data_dir=DATA_DIR).")


def prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """A prepared builder for `name`; Fashion-MNIST is prepared from local files.

  Raises:
    ValueError: unknown data set, or not an image classification set.
    FileNotFoundError: the set is not prepared in `data_dir` (nothing is downloaded).
  """
  if name == "fashion_mnist":
    builder = FashionMnistLocal(data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
    return builder
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f"Unknown data set {name!r}: supported are {', '.join(SUPPORTED)}, or any "
        "TFDS image classification data set (features 'image' and 'label').") from None
  features = builder.info.features
  if not ("image" in features and isinstance(features["image"], tfds.features.Image)
          and "label" in features
          and isinstance(features["label"], tfds.features.ClassLabel)):
    raise ValueError(f"TFDS data set {name!r} has no 'image' Image and 'label' "
                     f"ClassLabel features: {features}")
  if not builder.is_prepared():
    raise FileNotFoundError(_not_prepared_message(name, builder, data_dir))
  return builder


def _eval_split(name: str) -> str:
  return _EVAL_SPLIT.get(name, "test")


def has_variable_size(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the set's stored images vary in height or width (ImageNet and the like)."""
  height, width, _ = builder.info.features["image"].shape
  return height is None or width is None


def _image_shape(builder: tfds.core.DatasetBuilder) -> tuple[int, int, int]:
  height, width, channels = builder.info.features["image"].shape
  if has_variable_size(builder):
    return (_CROP_SIZE, _CROP_SIZE, channels)
  return (height, width, channels)


def get_dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """Returns the `DatasetInfo` of `name` (preparing local Fashion-MNIST if needed).

  Raises:
    ValueError: unknown data set, or not an image classification set.
    FileNotFoundError: the set is not prepared in `data_dir` (Fashion-MNIST: the
      local IDX files are missing).
  """
  builder = prepared_builder(name, data_dir)
  splits = builder.info.splits
  return DatasetInfo(
      name=name,
      num_classes=builder.info.features["label"].num_classes,
      image_shape=_image_shape(builder),
      num_train=splits["train"].num_examples,
      num_test=splits[_eval_split(name)].num_examples,
  )


def _not_converted(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn`, marked for tf.data to trace as it is, without autograph.

  The pipeline's functions branch on Python values only. Autograph would convert each one by
  writing its rewritten source to a `__autograph_generated_file*.py` in the system temp folder,
  deleted only at a clean interpreter exit (a killed process leaves them behind).
  """
  return tf.autograph.experimental.do_not_convert(fn)


def _normalize(name: str, image: tf.Tensor) -> tf.Tensor:
  """uint8 or float [0, 255] image -> float32, scaled to [0, 1] and normalized."""
  image = tf.cast(image, tf.float32) / 255.0
  if name in MEAN_STD:
    mean, std = MEAN_STD[name]
    image = (image - mean) / std
  return image


def _random_resized_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Inception-style crop: random 8%-100% area, aspect ratio in [3/4, 4/3], resized."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.image.resize(tf.slice(image, begin, size), (_CROP_SIZE, _CROP_SIZE))


def _resize_center_crop(image: tf.Tensor) -> tf.Tensor:
  """Resizes the shorter side to 256, then takes the central 224x224 crop."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  scale = _RESIZE_SIZE / tf.cast(tf.minimum(height, width), tf.float32)
  new_size = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale),
                     tf.int32)
  image = tf.image.resize(image, new_size)
  top = (new_size[0] - _CROP_SIZE) // 2
  left = (new_size[1] - _CROP_SIZE) // 2
  return image[top:top + _CROP_SIZE, left:left + _CROP_SIZE]


def _augment(image: tf.Tensor, seed: tf.Tensor, variable_size: bool) -> tf.Tensor:
  """Training augmentation of one image, deterministic given `seed` (int [2])."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if variable_size:
    image = _random_resized_crop(image, crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)
  height, width, channels = image.shape
  color = channels == 3
  pad = 4 if color else 2
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(padded, (height, width, channels), crop_seed)
  if color:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def train_batches(name: str, *, batch_size: int, seed: int, data_dir: str | None = None,
                  augment: bool = True, num_epochs: int | None = None,
                  rows: slice | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled, augmented training batches: rows `rows` of every global batch of `'train'`.

  Args:
    name: data set name (see the module docstring).
    batch_size: examples per global batch (over all processes).
    seed: seeds the shuffling (reshuffled every epoch) and the augmentation; the
      same seed gives the same global batches.
    data_dir: TFDS data directory (`None`: TFDS default).
    augment: apply the training augmentation (module docstring); if False the
      images are only normalized (variable-size images get the eval crop).
    num_epochs: passes over the data; `None` repeats forever. Batches run across
      epoch boundaries; only the last incomplete batch is dropped.
    rows: the rows of every global batch that this process yields, e.g.
      `slice(64, 128)`; `None`: all of them. The other rows are not augmented
      here (nor decoded, for sets too large to cache).

  Yields:
    `{'image': float32 [n, H, W, C], 'label': int32 [n]}` numpy arrays, with
    `n` the number of `rows` and (H, W, C) = `get_dataset_info(name).image_shape`.

  Raises:
    ValueError, FileNotFoundError: as `get_dataset_info`.
  """
  start, stop, step = (rows or slice(None)).indices(batch_size)
  if step != 1 or start >= stop:
    raise ValueError(f"rows={rows} must be a non-empty slice of the {batch_size} batch rows.")
  builder = prepared_builder(name, data_dir)
  variable_size = has_variable_size(builder)
  num_examples = builder.info.splits["train"].num_examples
  cache = (not variable_size
           and num_examples * math.prod(builder.info.features["image"].shape) <= _CACHE_BYTES)
  image_feature = builder.info.features["image"]
  # Sets too large to cache are decoded after `filter`, i.e. only this process's rows.
  ds = builder.as_dataset(split="train", shuffle_files=not cache,
                          read_config=tfds.ReadConfig(shuffle_seed=seed),
                          decoders=None if cache else {"image": tfds.decode.SkipDecoding()})
  ds = ds.map(_not_converted(lambda ex: {"image": ex["image"], "label": ex["label"]}))
  if cache:
    ds = ds.cache()
  ds = ds.shuffle(num_examples if cache else _SHUFFLE_BUFFER, seed=seed,
                  reshuffle_each_iteration=True)
  ds = ds.repeat(num_epochs)
  if num_epochs is not None:  # drop the last incomplete global batch
    ds = ds.take(num_examples * num_epochs // batch_size * batch_size)
  ds = ds.enumerate()
  if (start, stop) != (0, batch_size):
    ds = ds.filter(_not_converted(
        lambda index, ex: (start <= index % batch_size) & (index % batch_size < stop)))

  @_not_converted
  def preprocess(index: tf.Tensor, ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = ex["image"] if cache else image_feature.decode_example(ex["image"])
    if augment:
      image = _augment(image, tf.stack([tf.constant(seed, tf.int64), index]), variable_size)
    elif variable_size:
      image = _resize_center_crop(image)
    return {"image": _normalize(name, image), "label": tf.cast(ex["label"], tf.int32)}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(stop - start, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))


def eval_batches(name: str, *, batch_size: int,
                 data_dir: str | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's slice of the evaluation split, unaugmented.

  The evaluation split is `'test'` (`'validation'` for imagenet2012). Every batch
  is full so a jitted eval step compiles once: the tail is padded with zero images
  whose `mask` is False. All processes yield the same number of batches,
  `ceil(ceil(num_test / process_count) / batch_size)`; sum metrics weighted by
  `mask`.

  Args:
    name: data set name (see the module docstring).
    batch_size: examples per batch on this process.
    data_dir: TFDS data directory (`None`: TFDS default).

  Yields:
    `{'image': float32 [batch_size, H, W, C], 'label': int32 [batch_size],
    'mask': bool [batch_size]}` numpy arrays; `mask` marks the real examples.

  Raises:
    ValueError, FileNotFoundError: as `get_dataset_info`.
  """
  builder = prepared_builder(name, data_dir)
  variable_size = has_variable_size(builder)
  eval_split = _eval_split(name)
  split = tfds.split_for_jax_process(eval_split)
  per_process = -(-builder.info.splits[eval_split].num_examples // jax.process_count())
  num_padded = -(-per_process // batch_size) * batch_size
  num_pad = num_padded - builder.info.splits[split].num_examples

  @_not_converted
  def preprocess(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = _resize_center_crop(ex["image"]) if variable_size else ex["image"]
    return {"image": _normalize(name, image), "label": tf.cast(ex["label"], tf.int32),
            "mask": tf.constant(True)}

  padding = {"image": tf.zeros(_image_shape(builder), tf.float32),
             "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_pad))
  ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))
