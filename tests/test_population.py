"""Population training: each member is its own single run; divergence; stacking; 4 devices."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import TinyBNCNN, random_variables
from prospr_jax import masks as masks_lib
from prospr_jax import models
from prospr_jax.experiment import population as pop_lib
from prospr_jax.experiment.data import device_batches as db
from prospr_jax.experiment.data.in_memory import InMemorySplit
from prospr_jax.experiment.train_step import TrainState, eval_step, make_optimizer, train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES, IMAGE_SHAPE = 3, (8, 8, 1)
DATA_SEEDS = (10, 11, 12)


@dataclasses.dataclass(frozen=True)
class Hyperparams:
  """`train_step.TrainHyperparams` of a short run."""

  learning_rate: float = 0.1
  lr_schedule: str = "cosine"
  num_epochs: int = 2
  lr_decay_fractions: tuple[float, ...] = ()
  momentum: float = 0.9
  weight_decay: float = 5e-4


def _host_split(num: int, seed: int) -> InMemorySplit:
  rng = np.random.default_rng(seed)
  return InMemorySplit("synthetic", rng.integers(0, 256, (num, *IMAGE_SHAPE), np.uint8),
                       rng.integers(0, NUM_CLASSES, num).astype(np.int32), NUM_CLASSES)


TRAIN = db.put_on_device(_host_split(64, 0))
TEST = db.put_eval_on_device(_host_split(40, 1), 16)  # 3 batches, the last one half padding
BATCHING = db.Batching.for_split(TRAIN.num_examples, 16, steps_per_epoch=2)  # 2 epochs in 4


def new_member(model, init_seed: int, mask_seed: int) -> TrainState:
  """A single run's state at step 0: its own init and a random 50% mask of every param."""
  variables = random_variables(model, IMAGE_SHAPE, seed=init_seed)
  masks = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.PRNGKey(mask_seed), 0.5, p.shape),
                       variables["params"])
  hyperparams = Hyperparams()
  return TrainState.create(
      apply_fn=model.apply, params=masks_lib.apply_masks(variables["params"], masks),
      tx=make_optimizer(hyperparams, optax.cosine_decay_schedule(0.1, 4), masks),
      batch_stats=variables.get("batch_stats", {}), masks=masks)


@pytest.fixture(scope="module")
def states() -> list[TrainState]:
  model = TinyBNCNN(num_classes=NUM_CLASSES)
  return [new_member(model, init_seed=i, mask_seed=100 + i) for i in range(3)]


_single_run_batch = jax.jit(db.single_run_batch, static_argnums=1)


def train_alone(state: TrainState, data_seed: int, num_steps: int) -> TrainState:
  """The single run: `train_step` on the device batches of the run seeded `data_seed`."""
  order, key = db.initial_order(TRAIN.num_examples), db.run_key(data_seed)
  for step in range(num_steps):
    order, batch = _single_run_batch(TRAIN, BATCHING, key, order, step)
    state, _ = train_step(state, batch)
  return state


def top1_alone(state: TrainState) -> np.float32:
  """The single run's test top-1: `eval_step` sums over the eval batches, in float32."""
  sums = [eval_step(state, db.eval_batch(TEST, i)) for i in range(TEST.num_batches)]
  return np.float32(sum(s["top1"] for s in sums) / sum(s["count"] for s in sums))


def train_population(states, formulation: str, num_steps: int) -> pop_lib.Population:
  population = pop_lib.create_population(states, DATA_SEEDS, TRAIN.num_examples)
  step_fn = pop_lib.make_train_step(BATCHING, formulation)
  return pop_lib.train_steps(step_fn, population, TRAIN, range(num_steps))[0]


# Not bitwise: member i runs the single-run computation, but inside a larger program, where XLA
# fuses and schedules the BatchNorm and weight-gradient reductions on its own terms, and (vmap)
# convolves with a batch of weights, whose sums it orders differently. Each step then differs
# from the single run by float32 reassociation (~1e-7 relative), which SGD with momentum
# carries into later steps. Seen on this CPU after 4 steps: at most 3e-8 absolute, 1.1e-7
# relative, for both formulations. The bounds leave a 30x margin (unrolled) and, for vmap,
# whose batched convolutions may use other algorithms on other XLA versions, 300x (on the
# larger small_convnet, vmap differed by 1e-4 after 5 steps at lr 0.1). A wrong batch, mask,
# seed or member order gives differences of 1e-2 or more.
_TOLERANCE = {"unrolled": dict(rtol=1e-6, atol=1e-6), "vmap": dict(rtol=1e-5, atol=1e-5)}


@pytest.mark.parametrize("formulation", pop_lib.FORMULATIONS)
def test_each_member_is_its_single_run(states, formulation):
  """Member i of a population of 3 (own mask, init and data seed) after 4 steps (crossing an
  epoch boundary) has the params, BatchNorm statistics, step and test top-1 of the same run
  trained alone with `train_step.train_step` (tolerances: `_TOLERANCE`); the test top-1 are
  equal exactly."""
  num_steps = 4
  population = train_population(states, formulation, num_steps)
  top1 = pop_lib.make_evaluate(formulation)(population, TEST)["top1"]
  assert not population.diverged.any()
  for i, state in enumerate(states):
    alone = train_alone(state, DATA_SEEDS[i], num_steps)
    member = pop_lib.member_state(population, i)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **_TOLERANCE[formulation]),
                 (member.params, member.batch_stats), (alone.params, alone.batch_stats))
    assert int(member.step) == num_steps
    assert np.float32(top1[i]) == top1_alone(alone)
  # The members really are different runs.
  assert not np.allclose(population.train.params["head"]["kernel"][0],
                         population.train.params["head"]["kernel"][1])


@pytest.mark.parametrize("formulation", pop_lib.FORMULATIONS)
def test_a_nan_member_is_frozen_and_the_others_train_on(states, formulation):
  """Member 1's params are set to NaN after step 2: it is marked at step 2, keeps that state
  (params, momentum, statistics, step counter), and members 0 and 2 end bitwise as in a
  population where nothing happened."""
  step_fn = pop_lib.make_train_step(BATCHING, formulation)
  population = pop_lib.create_population(states, DATA_SEEDS, TRAIN.num_examples)
  population, _ = pop_lib.train_steps(step_fn, population, TRAIN, range(2))
  bias = population.train.params["head"]["bias"]
  poisoned = jax.tree.map(jnp.copy, population)  # the step donates its input's buffers
  poisoned = poisoned.replace(train=poisoned.train.replace(params={
      **poisoned.train.params, "head": {**poisoned.train.params["head"],
                                        "bias": bias.at[1].set(jnp.nan)}}))
  frozen = jax.tree.map(np.asarray, pop_lib.member_state(poisoned, 1))
  clean, _ = pop_lib.train_steps(step_fn, population, TRAIN, range(2, 4))
  poisoned, metrics = pop_lib.train_steps(step_fn, poisoned, TRAIN, range(2, 4))
  np.testing.assert_array_equal(poisoned.diverged, [False, True, False])
  np.testing.assert_array_equal(poisoned.diverged_at, [-1, 2, -1])
  assert np.isnan(metrics["loss"][:, 1]).all() and np.isfinite(metrics["loss"][:, [0, 2]]).all()
  assert not clean.diverged.any() and (clean.diverged_at == -1).all()
  jax.tree.map(np.testing.assert_array_equal, pop_lib.member_state(poisoned, 1), frozen)
  for i in (0, 2):
    jax.tree.map(np.testing.assert_array_equal, pop_lib.member_state(poisoned, i),
                 pop_lib.member_state(clean, i))


def test_members_of_different_architectures_cannot_be_stacked(states):
  wider = new_member(TinyBNCNN(num_classes=NUM_CLASSES + 1), init_seed=0, mask_seed=0)
  with pytest.raises(ValueError, match=r"Member 1 .* params\['head'\]\['bias'\] is "
                                       r"float32\[4\], member 0's is float32\[3\]"):
    pop_lib.stack_members([states[0], wider])
  dense = new_member(models.get_model("lenet300100", NUM_CLASSES), 0, 0)
  with pytest.raises(ValueError,
                     match=r"Member 1 .* differ in structure \(params\['BatchNorm_0'\]"):
    pop_lib.stack_members([states[0], dense])
  with pytest.raises(ValueError, match="3 members but 2 data seeds"):
    pop_lib.create_population(states, DATA_SEEDS[:2], TRAIN.num_examples)
  with pytest.raises(ValueError, match="Unknown formulation 'pmap'"):
    pop_lib.make_train_step(BATCHING, "pmap")


def test_four_devices_shard_the_members():
  """In a subprocess with 4 forced CPU devices (see tests/population_multi_device_check.py)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = subprocess.run([sys.executable, str(ROOT / "tests" / "population_multi_device_check.py")],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 4 and out["member_devices"] == 4
  assert out["max_param_diff"] <= 1e-6 and out["top1_equal"]
  assert "6 members cannot be sharded over 4 devices" in out["error"]
