r"""Population training throughput: vmap vs unrolled members, side by side in one process.

  python experiments/population_benchmark.py                      # small_convnet, lenet300100
  python experiments/population_benchmark.py --models=lenet300100 --sizes=1,8 --repeats=3

For each model, formulation ('vmap', 'unrolled') and population size P in --sizes, one
population of P masked members (random 50% masks, own init and data seed) is built on a
synthetic on-device split of 28x28x1 uint8 images, and its jitted step
(`population.make_train_step`, augmentation on) is compiled and run once. Then, --repeats
times, every setting in turn runs --steps consecutive steps (taking turns, so that background
load affects them alike), timed with `jax.block_until_ready`. Reported per setting: the
median ms per population step, member steps per second, and that throughput relative to P = 1
with the unrolled formulation (one run, its batches computed on the device: the single-run
baseline).

Imports no TensorFlow, tfds or ml-collections.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np
import optax
from absl import app, flags

from prospr_jax import masks as masks_lib
from prospr_jax import models
from prospr_jax.experiment import compile_cache
from prospr_jax.experiment import population as pop_lib
from prospr_jax.experiment.data import device_batches
from prospr_jax.experiment.data.in_memory import InMemorySplit
from prospr_jax.experiment.train_step import TrainState, make_optimizer

_MODELS = flags.DEFINE_list("models", ["small_convnet", "lenet300100"], "Zoo model names.")
_SIZES = flags.DEFINE_list("sizes", ["1", "2", "4", "8"], "Population sizes P.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per member and step.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed run.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per setting (median reported).")

_IMAGE_SHAPE = (28, 28, 1)
_NUM_CLASSES = 10
_NUM_EXAMPLES = 6400


class _Hyperparams:
  """`train_step.TrainHyperparams`: SGD with momentum 0.9, cosine decay from 0.1."""

  learning_rate, lr_schedule, num_epochs, lr_decay_fractions = 0.1, "cosine", 1, ()
  momentum, weight_decay = 0.9, 5e-4


def _member(model_name: str, seed: int) -> TrainState:
  """A masked single-run state at step 0: init seed `seed`, a random 50% mask."""
  model = models.get_model(model_name, _NUM_CLASSES)
  variables = models.init_variables(model, jax.random.PRNGKey(seed), _IMAGE_SHAPE)
  masks = jax.tree.map(
      lambda p: jax.random.bernoulli(jax.random.PRNGKey(1000 + seed), 0.5, p.shape),
      variables["params"])
  return TrainState.create(
      apply_fn=model.apply, params=masks_lib.apply_masks(variables["params"], masks),
      tx=make_optimizer(_Hyperparams(), optax.cosine_decay_schedule(0.1, 10_000), masks),
      batch_stats=variables.get("batch_stats", {}), masks=masks)


_COMPILE_CACHE_DIR = compile_cache.define_flag(compile_cache.DISABLED)


def main(argv: Sequence[str]) -> None:
  del argv
  compile_cache.enable(_COMPILE_CACHE_DIR.value)
  rng = np.random.default_rng(0)
  split = device_batches.put_on_device(InMemorySplit(
      "synthetic", rng.integers(0, 256, (_NUM_EXAMPLES, *_IMAGE_SHAPE), np.uint8),
      rng.integers(0, _NUM_CLASSES, _NUM_EXAMPLES).astype(np.int32), _NUM_CLASSES))
  batching = device_batches.Batching.for_split(_NUM_EXAMPLES, _BATCH_SIZE.value)
  sizes = [int(s) for s in _SIZES.value]
  if 1 not in sizes:
    raise app.UsageError("--sizes must include 1: P = 1 unrolled is the single-run baseline.")
  settings = {}  # (model, formulation, P) -> [step_fn, population, next step]
  for model_name in _MODELS.value:
    members = [_member(model_name, seed) for seed in range(max(sizes))]
    for formulation in pop_lib.FORMULATIONS:
      for size in sizes:
        step_fn = pop_lib.make_train_step(batching, formulation)
        population = pop_lib.create_population(members[:size], range(size), _NUM_EXAMPLES)
        start = time.perf_counter()
        population, _ = jax.block_until_ready(step_fn(population, split, np.int32(0)))
        print(f"{model_name} {formulation} P={size}: compiled and ran one step in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        settings[model_name, formulation, size] = [step_fn, population, 1]
  times = {key: [] for key in settings}
  for _ in range(_REPEATS.value):
    for key, setting in settings.items():
      step_fn, population, first = setting
      start = time.perf_counter()
      population, _ = jax.block_until_ready(pop_lib.train_steps(
          step_fn, population, split, range(first, first + _STEPS.value)))
      times[key].append((time.perf_counter() - start) / _STEPS.value)
      setting[1:] = [population, first + _STEPS.value]
  print(f"\nbatch {_BATCH_SIZE.value} per member, {jax.devices()[0].device_kind}, median of "
        f"{_REPEATS.value} x {_STEPS.value} steps")
  print("model          formulation   P   ms/step  member steps/s  vs single run")
  for model_name, formulation, size in settings:
    ms = 1e3 * statistics.median(times[model_name, formulation, size])
    single_ms = 1e3 * statistics.median(times[model_name, "unrolled", 1])
    print(f"{model_name:14s} {formulation:11s} {size:3d} {ms:9.2f} {1e3 * size / ms:15.0f} "
          f"{size * single_ms / ms:13.2f}x")


if __name__ == "__main__":
  app.run(main)
