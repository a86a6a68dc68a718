"""Whole splits of small image classification sets as numpy arrays, for on-device batches.

* `fashion_mnist`: read straight from Debian's IDX files (`fashion_mnist_idx`) with numpy and
  gzip only; neither TensorFlow nor TFDS is imported.
* `mnist`, `cifar10`, `cifar100` and any other fixed-size TFDS image classification set: the
  whole split through TFDS (`builder.as_dataset(split, batch_size=-1)`), imported on first use.
  The set must be prepared in `data_dir` (nothing is downloaded; the errors are those of
  `input_pipeline`). Variable-size sets (ImageNet) do not fit this scheme and are refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prospr_jax.experiment.data import fashion_mnist_idx


@dataclasses.dataclass(frozen=True)
class InMemorySplit:
  """One split of an image classification set, in host memory.

  Attributes:
    name: the data set's name (selects the normalization constants, `normalization.MEAN_STD`).
    images: uint8 [N, H, W, C] raw pixels.
    labels: int32 [N] class indices in [0, num_classes).
    num_classes: number of classes of the data set (not only those present in `labels`).
  """

  name: str
  images: np.ndarray
  labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f"images must be uint8 [N, H, W, C]; got {self.images.dtype} "
                       f"{self.images.shape}.")
    if self.labels.shape != self.images.shape[:1]:
      raise ValueError(f"{len(self.images)} images but labels of shape {self.labels.shape}.")


def load_split(name: str, split: str, data_dir: str | None = None) -> InMemorySplit:
  """The whole split `split` ('train' or 'test') of data set `name`, in host memory.

  Args:
    name: `'fashion_mnist'` (Debian's IDX files, see `fashion_mnist_idx.source_dir_from_env`)
      or a fixed-size TFDS image classification set prepared in `data_dir`.
    split: a split name of the set, e.g. `'train'` or `'test'`.
    data_dir: TFDS data directory (`None`: TFDS's default); unused for Fashion-MNIST.

  Raises:
    FileNotFoundError: Fashion-MNIST's IDX files are missing, or a TFDS set is not prepared.
    ValueError: unknown split, unknown set, not an image classification set, or
      variable-size images.
  """
  if name == "fashion_mnist":
    if split not in fashion_mnist_idx.SPLIT_FILES:
      raise ValueError(f"Fashion-MNIST has splits {tuple(fashion_mnist_idx.SPLIT_FILES)}, "
                       f"not {split!r}.")
    images, labels = fashion_mnist_idx.load_split(split)
    return InMemorySplit(name, images[..., None], labels.astype(np.int32),
                         len(fashion_mnist_idx.CLASS_NAMES))
  return _load_tfds_split(name, split, data_dir)


def _load_tfds_split(name: str, split: str, data_dir: str | None) -> InMemorySplit:
  """`load_split` for a TFDS set: the whole split as one batch (imports TensorFlow)."""
  # pylint: disable-next=g-import-not-at-top (TF and TFDS only for TFDS sets)
  from prospr_jax.experiment.data import input_pipeline
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = input_pipeline.prepared_builder(name, data_dir)
  if input_pipeline.has_variable_size(builder):
    raise ValueError(f"{name!r} has variable-size images; in-memory splits need fixed-size "
                     "ones (use input_pipeline.train_batches).")
  if split not in builder.info.splits:
    raise ValueError(f"{name!r} has splits {tuple(builder.info.splits)}, not {split!r}.")
  whole = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
  return InMemorySplit(name, whole["image"], whole["label"].astype(np.int32),
                       builder.info.features["label"].num_classes)
