"""On-device batches: order per (seed, step), epochs, augmentation, normalization, eval."""

import jax
import numpy as np
import pytest

from prospr_jax.experiment.data import device_batches as db
from prospr_jax.experiment.data.in_memory import InMemorySplit
from prospr_jax.experiment.data.normalization import MEAN_STD

NUM_EXAMPLES, BATCH_SIZE = 48, 8


def _split(channels: int, name: str = "synthetic", num: int = NUM_EXAMPLES) -> InMemorySplit:
  """Random uint8 7x7 images in 1..255 (0 is the padding only); label i is example i."""
  images = np.random.default_rng(channels).integers(1, 256, (num, 7, 7, channels), np.uint8)
  return InMemorySplit(name, images, np.arange(num, dtype=np.int32), num)


_batch_at = jax.jit(db.single_run_batch, static_argnums=1)


def _run(split: db.DeviceSplit, batching: db.Batching, seed: int, steps) -> list[dict]:
  """The batches of `steps` (in this order) of the run seeded `seed`, as numpy."""
  order, key, batches = db.initial_order(split.num_examples), db.run_key(seed), []
  for step in steps:
    order, batch = _batch_at(split, batching, key, order, step)
    batches.append(jax.tree.map(np.asarray, batch))
  return batches


def _pixels(batch: dict) -> np.ndarray:
  """uint8 pixels back from a normalized batch of a set without constants (mean 0, std 1)."""
  return np.rint(batch["image"] * 255).astype(np.uint8)


def test_order_is_a_function_of_seed_and_step_and_visits_each_example_once_per_epoch():
  split = db.put_on_device(_split(1))
  batching = db.Batching.for_split(NUM_EXAMPLES, BATCH_SIZE, augment=False)
  steps = batching.steps_per_epoch  # 6
  run = _run(split, batching, seed=0, steps=range(3 * steps))
  labels = [np.concatenate([b["label"] for b in run[e * steps:(e + 1) * steps]])
            for e in range(3)]
  for epoch_labels in labels:
    np.testing.assert_array_equal(np.sort(epoch_labels), np.arange(NUM_EXAMPLES))
  assert not np.array_equal(labels[0], labels[1]) and not np.array_equal(labels[1], labels[2])
  # Same seed and step, whatever came before (here: starting mid-way through epoch 1).
  jumped = _run(split, batching, seed=0, steps=[steps + 3, 2 * steps + 1])
  for got, want in zip(jumped, [run[steps + 3], run[2 * steps + 1]]):
    jax.tree.map(np.testing.assert_array_equal, got, want)
  other = _run(split, batching, seed=1, steps=range(steps))
  assert not np.array_equal(np.concatenate([b["label"] for b in other]), labels[0])


def test_batches_never_cross_epochs_and_drop_a_different_tail_each_epoch():
  split = db.put_on_device(_split(1, num=NUM_EXAMPLES + 5))
  batching = db.Batching.for_split(NUM_EXAMPLES + 5, BATCH_SIZE, augment=False)
  assert batching.steps_per_epoch == NUM_EXAMPLES // BATCH_SIZE
  run = _run(split, batching, seed=0, steps=range(2 * batching.steps_per_epoch))
  epochs = [np.concatenate([b["label"] for b in half])
            for half in (run[:batching.steps_per_epoch], run[batching.steps_per_epoch:])]
  for epoch_labels in epochs:
    assert len(np.unique(epoch_labels)) == NUM_EXAMPLES  # no repeats within an epoch
  assert set(epochs[0]) != set(epochs[1])


def _matching_crops(image: np.ndarray, source: np.ndarray, pad: int) -> set[tuple[int, int, bool]]:
  """The (top, left, flipped) crops of `source` zero-padded by `pad` that equal `image`."""
  height, width, _ = source.shape
  padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
  return {(top, left, flip)
          for top in range(2 * pad + 1) for left in range(2 * pad + 1) for flip in (False, True)
          if np.array_equal(image, (lambda c: c[:, ::-1] if flip else c)(
              padded[top:top + height, left:left + width]))}


@pytest.mark.parametrize("channels, pad, flips", [(1, 2, False), (3, 4, True)])
def test_augmentation_crops_the_zero_padded_image_of_the_label(channels, pad, flips):
  """Every augmented image is a crop of ITS OWN example (label i = example i) zero-padded by
  `pad`; grayscale images are never flipped; across the batches both corners and flips vary."""
  host = _split(channels)
  batching = db.Batching.for_split(NUM_EXAMPLES, BATCH_SIZE, augment=True)
  run = _run(db.put_on_device(host), batching, seed=3, steps=range(batching.steps_per_epoch))
  crops = []
  for batch in run:
    for image, label in zip(_pixels(batch), batch["label"]):
      matches = _matching_crops(image, host.images[label], pad)
      assert matches, f"example {label}: not a crop of its zero-padded image"
      if not flips:
        assert not any(flip for _, _, flip in matches), f"example {label} was flipped"
      crops.append(min(matches))
  tops, lefts, flipped = zip(*crops)
  assert set(tops) == set(lefts) == set(range(2 * pad + 1))
  assert set(flipped) == ({False, True} if flips else {False})


def test_augmentation_is_deterministic_and_differs_between_seeds():
  split = db.put_on_device(_split(3))
  batching = db.Batching.for_split(NUM_EXAMPLES, BATCH_SIZE, augment=True)
  first, again = (_run(split, batching, seed=5, steps=[2]) for _ in range(2))
  np.testing.assert_array_equal(first[0]["image"], again[0]["image"])
  unaugmented = _run(split, db.Batching(BATCH_SIZE, batching.steps_per_epoch, False), seed=5,
                     steps=[2])
  np.testing.assert_array_equal(first[0]["label"], unaugmented[0]["label"])  # same order
  assert not np.array_equal(first[0]["image"], unaugmented[0]["image"])


def test_normalization_uses_the_data_sets_mean_and_std():
  host = _split(1, name="fashion_mnist")
  batching = db.Batching.for_split(NUM_EXAMPLES, BATCH_SIZE, augment=False)
  batch = _run(db.put_on_device(host), batching, seed=0, steps=[0])[0]
  (mean,), (std,) = MEAN_STD["fashion_mnist"]
  want = (host.images[batch["label"]].astype(np.float32) / 255 - mean) / std
  np.testing.assert_allclose(batch["image"], want, rtol=1e-6, atol=1e-6)


def test_eval_set_pads_the_tail_and_masks_it():
  host = _split(1, num=NUM_EXAMPLES + 3)
  eval_set = db.put_eval_on_device(host, BATCH_SIZE)
  assert eval_set.num_batches == NUM_EXAMPLES // BATCH_SIZE + 1
  batches = [jax.tree.map(np.asarray, db.eval_batch(eval_set, i))
             for i in range(eval_set.num_batches)]
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == NUM_EXAMPLES + 3 and not mask[NUM_EXAMPLES + 3:].any()
  labels = np.concatenate([b["label"] for b in batches])[mask]
  np.testing.assert_array_equal(labels, host.labels)  # in order, unaugmented
  np.testing.assert_array_equal(np.concatenate([_pixels(b) for b in batches])[mask], host.images)


def test_bad_batching_is_refused():
  with pytest.raises(ValueError, match="batch_size=0"):
    db.Batching.for_split(NUM_EXAMPLES, 0)
  with pytest.raises(ValueError, match=r"steps_per_epoch=7 must be in \[1, 6\]"):
    db.Batching.for_split(NUM_EXAMPLES, BATCH_SIZE, steps_per_epoch=7)
  with pytest.raises(ValueError, match="uint8"):
    InMemorySplit("x", np.zeros((2, 3, 3, 1), np.float32), np.zeros(2, np.int32), 2)
