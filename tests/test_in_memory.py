"""Whole splits in memory: Fashion-MNIST from the IDX files without TF, TFDS sets through TFDS."""

import os
import pathlib
import subprocess
import sys

import pytest

from prospr_jax.experiment.data import fashion_mnist_idx, in_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_fmnist = pytest.mark.skipif(
    not (fashion_mnist_idx.source_dir_from_env() / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files missing: {fashion_mnist_idx.INSTALL_COMMAND}")


@needs_fmnist
def test_fashion_mnist_loads_without_tensorflow():
  code = ("import sys; from prospr_jax.experiment.data import in_memory; "
          "s = in_memory.load_split('fashion_mnist', 'test'); "
          "print(s.images.shape, s.images.dtype, s.labels.dtype, s.num_classes, "
          "sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
  assert out.strip() == "(10000, 28, 28, 1) uint8 int32 10 []"


def _sorted_examples(split: in_memory.InMemorySplit) -> list[tuple[bytes, int]]:
  return sorted(zip((image.tobytes() for image in split.images), split.labels.tolist()))


@needs_fmnist
def test_idx_reader_matches_the_tfds_builder(fashion_mnist_data_dir):
  """The IDX reader and the TFDS path (here through the `fashion_mnist_local` builder, which
  stores the examples in its own order) give the same (image, label) pairs."""
  idx = in_memory.load_split("fashion_mnist", "test")
  # pylint: disable-next=protected-access (the TFDS path of load_split, on a prepared set)
  tfds_split = in_memory._load_tfds_split("fashion_mnist", "test", fashion_mnist_data_dir)
  assert tfds_split.images.shape == idx.images.shape and tfds_split.num_classes == 10
  assert _sorted_examples(tfds_split) == _sorted_examples(idx)


def test_unprepared_tfds_set_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="never downloads"):
    in_memory.load_split("mnist", "train", str(tmp_path))


def test_unknown_fashion_mnist_split_is_refused():
  with pytest.raises(ValueError, match="'validation'"):
    in_memory.load_split("fashion_mnist", "validation")
