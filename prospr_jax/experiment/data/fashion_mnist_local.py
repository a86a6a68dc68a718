"""Offline TFDS builder `fashion_mnist_local`: Fashion-MNIST from local IDX gzip files.

The network builder `tfds.builder('fashion_mnist')` downloads the data; this one
reads the four IDX files that Debian's `dataset-fashion-mnist` package installs in
`/usr/share/datasets/fashion-mnist` (or the directory named by
`$PROSPR_FASHION_MNIST_DIR`, or the builder's `source_dir` argument) and never
touches the network. Preparing the TFDS records from them takes a few seconds.
"""

import gzip
import os
import pathlib
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_DIR_ENV = "PROSPR_FASHION_MNIST_DIR"
INSTALL_COMMAND = "apt-get update && apt-get install -y dataset-fashion-mnist"

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# split -> (images file, labels file), the names used by the original release.
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dimension


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes into a uint8 array.

  Args:
    path: the `.gz` file.
    magic: the expected magic number (`0x803` for images [N, 28, 28], `0x801`
      for labels [N]).

  Returns:
    uint8 array with the shape stored in the file header.

  Raises:
    ValueError: wrong magic number, or payload size not matching the header.
  """
  with gzip.open(path, "rb") as f:
    data = f.read()
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    raise ValueError(f"{path}: IDX magic number {found:#010x}, expected {magic:#010x}.")
  ndim = magic & 0xFF
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  payload = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if payload.size != np.prod(shape):
    raise ValueError(f"{path}: {payload.size} bytes of data, header says shape {shape}.")
  return payload.reshape(shape)


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


def source_dir_from_env() -> pathlib.Path:
  """The IDX directory: `$PROSPR_FASHION_MNIST_DIR`, else `DEFAULT_SOURCE_DIR`."""
  return pathlib.Path(os.environ.get(SOURCE_DIR_ENV, DEFAULT_SOURCE_DIR))


def load_split(split: str, source_dir: str | os.PathLike | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split straight from the IDX files.

  Args:
    split: `'train'` (60000 examples) or `'test'` (10000 examples).
    source_dir: directory of the four `.gz` files; `None` means
      `source_dir_from_env()`.

  Returns:
    `(images, labels)`: uint8 [N, 28, 28] and uint8 [N].

  Raises:
    FileNotFoundError: a file is missing; the message gives the install command.
  """
  source_dir = pathlib.Path(source_dir) if source_dir is not None else source_dir_from_env()
  paths = [source_dir / name for name in _FILES[split]]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files not found: {', '.join(missing)}. Install Debian's "
        f"package with `{INSTALL_COMMAND}`, or point ${SOURCE_DIR_ENV} at a directory "
        f"holding {', '.join(n for pair in _FILES.values() for n in pair)}.")
  images = read_idx(paths[0], _IMAGES_MAGIC)
  labels = read_idx(paths[1], _LABELS_MAGIC)
  if len(images) != len(labels):
    raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels.")
  return images, labels


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
            for split in _FILES}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray
                         ) -> Iterator[tuple[int, dict]]:
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": encode_png(image), "label": int(label)}
