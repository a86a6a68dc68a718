"""Input pipelines: real offline Fashion-MNIST, mocked TFDS sets, determinism, errors."""

import gzip
import itertools
import pathlib

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from prospr_jax.experiment.data import eval_batches, get_dataset_info, train_batches  # noqa: E402
from prospr_jax.experiment.data import (  # noqa: E402
    fashion_mnist_idx, input_pipeline)

FMNIST_DIR = pathlib.Path(fashion_mnist_idx.DEFAULT_SOURCE_DIR)
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files missing: {fashion_mnist_idx.INSTALL_COMMAND}")


def _idx_test_split() -> tuple[np.ndarray, np.ndarray]:
  """Test images [N, 784] and labels [N] parsed here, independently of the library."""
  with gzip.open(FMNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
  with gzip.open(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  return images, labels


def _fake_prepared(name: str, data_dir: pathlib.Path, sizes: dict[str, int]) -> None:
  """Writes the metadata of a prepared `name` (no records): for `mock_data`."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.info.set_splits(tfds.core.SplitDict(
      [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in sizes.items()]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_dir)


@needs_fmnist
def test_fashion_mnist_info(fashion_mnist_data_dir):
  info = get_dataset_info("fashion_mnist", fashion_mnist_data_dir)
  assert (info.name, info.num_classes, info.image_shape) == ("fashion_mnist", 10, (28, 28, 1))
  assert (info.num_train, info.num_test) == (60000, 10000)


@pytest.fixture(scope="module")
def fmnist_train(fashion_mnist_data_dir) -> dict[str, list[dict[str, np.ndarray]]]:
  """First training batches of three iterators (each one reads the whole split once)."""
  def first(n, batch_size, **kwargs):
    it = train_batches("fashion_mnist", batch_size=batch_size, data_dir=fashion_mnist_data_dir,
                       **kwargs)
    return [next(it) for _ in range(n)]

  return {"seed0": first(4, 256, seed=0), "seed0_again": first(4, 256, seed=0),
          "seed1_plain": first(10, 500, seed=1, augment=False)}


@needs_fmnist
def test_fashion_mnist_train_batches(fmnist_train):
  for b in fmnist_train["seed0"]:
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (256, 28, 28, 1) and b["image"].dtype == np.float32
    assert b["label"].shape == (256,) and b["label"].dtype == np.int32
  labels = np.concatenate([b["label"] for b in fmnist_train["seed0"]])
  assert set(labels.tolist()) == set(range(10))


@needs_fmnist
def test_fashion_mnist_normalized_statistics(fmnist_train):
  images = np.concatenate([b["image"] for b in fmnist_train["seed1_plain"]])
  assert images.shape == (5000, 28, 28, 1)
  assert abs(images.mean()) < 0.05
  assert abs(images.std() - 1.0) < 0.05


@needs_fmnist
def test_train_batches_are_deterministic(fmnist_train):
  for x, y in zip(fmnist_train["seed0"], fmnist_train["seed0_again"]):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  # The shuffle depends on the seed only, not on `augment`.
  assert not np.array_equal(fmnist_train["seed0"][0]["label"],
                            fmnist_train["seed1_plain"][0]["label"][:256])


@needs_fmnist
@pytest.mark.parametrize("cached", [True, False])
def test_processes_rows_make_the_global_batches(fashion_mnist_data_dir, monkeypatch, cached):
  """Rows [0, 16) and [16, 64) of each global batch, read by two "processes", are the global
  batch that one process reads: same examples, order and augmentation, cached or not (sets
  too large to cache are decoded after the rows are chosen)."""
  if not cached:
    monkeypatch.setattr(input_pipeline, "_CACHE_BYTES", 0)

  def batches(rows=None, num_epochs=None, n=3):
    it = train_batches("fashion_mnist", batch_size=64, seed=2, data_dir=fashion_mnist_data_dir,
                       rows=rows, num_epochs=num_epochs)
    return list(itertools.islice(it, n))

  whole = batches()
  for a, b, g in zip(batches(slice(0, 16)), batches(slice(16, 64)), whole, strict=True):
    assert a["image"].shape == (16, 28, 28, 1) and b["label"].shape == (48,)
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), g[key])
  if cached:  # a finite pass ends with the last complete global batch on every process: the
    # 60000 % 64 = 32 examples left would fill rows [0, 16) of one more batch, not the others.
    assert len(batches(slice(0, 16), num_epochs=1, n=None)) == 60000 // 64


def test_rows_must_be_a_slice_of_the_batch():
  with pytest.raises(ValueError, match=r"rows=slice\(8, 8, None\) must be a non-empty slice"):
    train_batches("fashion_mnist", batch_size=8, seed=0, rows=slice(8, 8))


@needs_fmnist
def test_fashion_mnist_eval_is_the_whole_test_split(fashion_mnist_data_dir):
  batches = list(eval_batches("fashion_mnist", batch_size=512, data_dir=fashion_mnist_data_dir))
  assert len(batches) == 20  # ceil(10000 / 512): every batch full, the tail padded.
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert images.shape == (20 * 512, 28, 28, 1) and mask.dtype == bool
  assert mask.sum() == 10000 and mask[:10000].all()
  assert not images[~mask].any()

  idx_images, idx_labels = _idx_test_split()
  np.testing.assert_array_equal(np.bincount(labels[mask], minlength=10),
                                np.bincount(idx_labels, minlength=10))
  # The stored images are the IDX images: undo the normalization, compare the
  # (label, pixel sum) multisets (the prepared split's order differs).
  mean, std = 0.2860, 0.3530
  pixels = np.rint((images[mask] * std + mean) * 255).astype(np.int64)
  ours = sorted(zip(labels[mask].tolist(), pixels.reshape(10000, -1).sum(1).tolist()))
  ref = sorted(zip(idx_labels.tolist(), idx_images.astype(np.int64).sum(1).tolist()))
  assert ours == ref


@pytest.mark.parametrize("name,num_classes,image_shape,eval_split", [
    ("cifar10", 10, (32, 32, 3), "test"),
    ("cifar100", 100, (32, 32, 3), "test"),
    ("imagenet2012", 1000, (224, 224, 3), "validation"),  # Variable-size images.
])
def test_generic_tfds_path_with_mock_data(tmp_path, name, num_classes, image_shape,
                                          eval_split):
  _fake_prepared(name, tmp_path, {"train": 50000, eval_split: 10000})
  data_dir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=10, data_dir=data_dir):
    info = get_dataset_info(name, data_dir)
    assert (info.num_classes, info.image_shape) == (num_classes, image_shape)
    assert (info.num_train, info.num_test) == (50000, 10000)

    augmented = list(train_batches(name, batch_size=4, seed=0, data_dir=data_dir,
                                   num_epochs=2))
    assert len(augmented) == 5  # 2 epochs x 10 examples // 4, remainder dropped.
    plain = list(train_batches(name, batch_size=10, seed=0, data_dir=data_dir,
                               num_epochs=2, augment=False))
    first = augmented[0]
    assert first["image"].shape == (4, *image_shape) and first["image"].dtype == np.float32
    assert first["label"].dtype == np.int32
    assert ((first["label"] >= 0) & (first["label"] < num_classes)).all()
    # Same shuffle with and without augmentation; augmentation changes the pixels.
    np.testing.assert_array_equal(first["label"], plain[0]["label"][:4])
    assert not np.allclose(first["image"], plain[0]["image"][:4])
    # Each epoch is a fresh permutation of the same examples.
    epoch1, epoch2 = (np.sort(p["image"].reshape(10, -1).sum(1)) for p in plain)
    np.testing.assert_allclose(epoch1, epoch2, rtol=1e-4)
    assert not np.array_equal(plain[0]["image"], plain[1]["image"])

    batch = next(eval_batches(name, batch_size=4, data_dir=data_dir))
    assert batch["image"].shape == (4, *image_shape) and batch["mask"].all()


def test_missing_fashion_mnist_files(tmp_path, monkeypatch):
  monkeypatch.setenv(fashion_mnist_idx.SOURCE_DIR_ENV, str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
    get_dataset_info("fashion_mnist", str(tmp_path / "data"))


def test_idx_magic_number_is_checked(tmp_path):
  path = tmp_path / "labels.gz"
  with gzip.open(path, "wb") as f:
    f.write((0x803).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x00")
  with pytest.raises(ValueError, match="magic"):
    fashion_mnist_idx.read_idx(path, 0x801)


def test_unknown_data_set(tmp_path):
  with pytest.raises(ValueError, match="fashion_mnist, mnist, cifar10"):
    get_dataset_info("no_such_data_set", str(tmp_path))
  with pytest.raises(ValueError, match="'image'"):
    get_dataset_info("imdb_reviews", str(tmp_path))  # Text, not images.


def test_unprepared_tfds_set_is_not_downloaded(tmp_path, monkeypatch):
  def no_download(*args, **kwargs):
    raise AssertionError("download attempted")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  with pytest.raises(FileNotFoundError) as err:
    train_batches("cifar10", batch_size=8, seed=0, data_dir=str(tmp_path))
  assert "cifar10" in str(err.value) and str(tmp_path) in str(err.value)
  assert "tfds build cifar10" in str(err.value)
  assert not any(tmp_path.iterdir())
