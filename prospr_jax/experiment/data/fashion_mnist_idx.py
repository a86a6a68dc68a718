"""Fashion-MNIST straight from Debian's IDX gzip files, with numpy and gzip only (no TF/TFDS).

Debian's `dataset-fashion-mnist` package installs the four files of the original release in
`/usr/share/datasets/fashion-mnist`; `$PROSPR_FASHION_MNIST_DIR` (or a `source_dir` argument)
points elsewhere. The TFDS builder `fashion_mnist_local` and the in-memory loader
(`in_memory.py`) both read them through `load_split`.
"""

import gzip
import os
import pathlib

import numpy as np

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_DIR_ENV = "PROSPR_FASHION_MNIST_DIR"
INSTALL_COMMAND = "apt-get update && apt-get install -y dataset-fashion-mnist"

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# split -> (images file, labels file), the names used by the original release.
SPLIT_FILES = {
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
  paths = [source_dir / name for name in SPLIT_FILES[split]]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files not found: {', '.join(missing)}. Install Debian's "
        f"package with `{INSTALL_COMMAND}`, or point ${SOURCE_DIR_ENV} at a directory "
        f"holding {', '.join(n for pair in SPLIT_FILES.values() for n in pair)}.")
  images = read_idx(paths[0], _IMAGES_MAGIC)
  labels = read_idx(paths[1], _LABELS_MAGIC)
  if len(images) != len(labels):
    raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels.")
  return images, labels
