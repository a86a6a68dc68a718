"""Offline TFDS builder `fashion_mnist_local`: Fashion-MNIST from local IDX gzip files.

The network builder `tfds.builder('fashion_mnist')` downloads the data; this one
reads the four IDX files that Debian's `dataset-fashion-mnist` package installs in
`/usr/share/datasets/fashion-mnist` (or the directory named by
`$PROSPR_FASHION_MNIST_DIR`, or the builder's `source_dir` argument) and never
touches the network. Preparing the TFDS records from them takes a few seconds.
"""

import os
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from prospr_jax.experiment.data.fashion_mnist_idx import CLASS_NAMES, SPLIT_FILES, load_split


def encode_png(image: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] grayscale image as PNG bytes (8-bit, no filtering).

  `tfds.features.Image` accepts these bytes as they are; handing it the arrays
  instead costs one TensorFlow op call per image and doubles the preparation time.
  """
  height, width = image.shape
  rows = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1)  # filter byte 0

  def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  return (b"\x89PNG\r\n\x1a\n"
          + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(rows.tobytes()))
          + chunk(b"IEND", b""))


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (28x28 grayscale, 10 classes, 60000 train / 10000 test), offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: reads the local IDX gzip files."}

  def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
    """Creates the builder.

    Args:
      source_dir: directory of the IDX files; `None` means `source_dir_from_env()`.
      **kwargs: for `tfds.core.GeneratorBasedBuilder`, e.g. `data_dir`, where the
        prepared records go (default `~/tensorflow_datasets`).
    """
    super().__init__(**kwargs)
    self._source_dir = source_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST read from local IDX gzip files (no download).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation=(
            "@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for "
            "Benchmarking Machine Learning Algorithms}, author={Xiao, Han and Rasul, "
            "Kashif and Vollgraf, Roland}, journal={arXiv:1708.07747}, year={2017}}"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> dict[str, Iterator[tuple[int, dict]]]:
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(*load_split(split, self._source_dir))
            for split in SPLIT_FILES}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray
                         ) -> Iterator[tuple[int, dict]]:
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": encode_png(image), "label": int(label)}
