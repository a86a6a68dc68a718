"""Population training throughput: P members in one step against P runs one after another.

For each model, formulation ('vmap', 'unrolled' members) and population size P, a population
of P masked members (a random 50% mask each, own init and data seed) trains on a synthetic
on-device split of uint8 images through `population.make_train_step` (augmentation on). Each
setting is compiled (its compile time and peak memory per member recorded), then every setting
in turn runs `steps` consecutive steps per timed call (`timing.interleaved_median_ms`), so that
background load hits them alike. Reported: ms per population step, member steps per second,
and that throughput relative to P = 1 unrolled: one run alone with its batches computed on the
device, i.e. P runs one after another. Each row also says how many CPU cores the process kept
busy while stepping: on a CPU, a population can only speed up what one run leaves idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from prospr_jax import masks as masks_lib
from prospr_jax import models
from prospr_jax.benchmark import cost_cases, result_record, timing
from prospr_jax.experiment import population as pop_lib
from prospr_jax.experiment.data import device_batches
from prospr_jax.experiment.data.in_memory import InMemorySplit
from prospr_jax.experiment.train_step import TrainState, make_optimizer

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
NUM_EXAMPLES = 6400
SMOKE_SETTINGS = {"model_names": ("lenet300100",), "sizes": (1, 2), "batch_size": 8,
                  "steps": 2, "repeats": 1}
"""`run_population_benchmark` keyword arguments of a tiny, fast run."""


def member_state(model_name: str, seed: int,
                 image_shape: Sequence[int] = IMAGE_SHAPE) -> TrainState:
  """A masked single-run state at step 0: init seed `seed`, a random 50% mask per leaf."""
  model = models.get_model(model_name, NUM_CLASSES)
  variables = models.init_variables(model, jax.random.PRNGKey(seed), tuple(image_shape))
  masks = jax.tree.map(
      lambda p: jax.random.bernoulli(jax.random.PRNGKey(1000 + seed), 0.5, p.shape),
      variables["params"])
  return TrainState.create(
      apply_fn=model.apply, params=masks_lib.apply_masks(variables["params"], masks),
      tx=make_optimizer(cost_cases.TRAIN_CONFIG, optax.cosine_decay_schedule(0.1, 10_000), masks),
      batch_stats=variables.get("batch_stats", {}), masks=masks)


class _Training:
  """One setting's population, trained `steps` steps per call from where the last call ended."""

  def __init__(self, step_fn: pop_lib.StepFn | jax.stages.Compiled,
               population: pop_lib.Population,
               split: device_batches.DeviceSplit, steps: int):
    self.step_fn, self.population, self.split, self.steps = step_fn, population, split, steps
    self.next_step = 0

  def __call__(self) -> Any:
    self.population, _ = pop_lib.train_steps(
        self.step_fn, self.population, self.split,
        range(self.next_step, self.next_step + self.steps))
    self.next_step += self.steps
    return self.population


def run_population_benchmark(
    model_names: Sequence[str] = ("small_convnet", "lenet300100"),
    sizes: Sequence[int] = (1, 2, 4, 8),
    batch_size: int = 128,
    steps: int = 10,
    repeats: int = 5,
    image_shape: Sequence[int] = IMAGE_SHAPE,
    formulations: Sequence[str] = pop_lib.FORMULATIONS,
) -> dict[str, Any]:
  """Runs every setting (each of `formulations` at each P of `sizes`, and always P = 1
  'unrolled', the single-run baseline) on synthetic `image_shape` images; returns a
  'population' `result_record` whose 'rows' are
  `{'model', 'formulation', 'size', 'compile_s', 'ms_per_step', 'member_steps_per_s',
  'vs_single_run', 'cores_busy', 'peak_mib_per_member'}` (`cores_busy`: CPU cores the
  process kept busy while stepping, `timing.RunTiming`)."""
  unknown = set(formulations) - set(pop_lib.FORMULATIONS)
  if unknown:
    raise ValueError(f"Unknown formulations {sorted(unknown)}; choose from "
                     f"{pop_lib.FORMULATIONS}.")
  settings = list(dict.fromkeys([("unrolled", 1)] + [(f, p) for f in formulations
                                                      for p in sizes]))
  rng = np.random.default_rng(0)
  split = device_batches.put_on_device(InMemorySplit(
      "synthetic", rng.integers(0, 256, (NUM_EXAMPLES, *image_shape), np.uint8),
      rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32), NUM_CLASSES))
  batching = device_batches.Batching.for_split(NUM_EXAMPLES, batch_size)
  calls, compiled = {}, {}
  for model_name in model_names:
    members = [member_state(model_name, seed, image_shape) for seed in range(max(sizes))]
    for formulation, size in settings:
      step_fn = pop_lib.make_train_step(batching, formulation)
      population = pop_lib.create_population(members[:size], range(size), NUM_EXAMPLES)
      call = timing.compile_call(step_fn, population, split, np.int32(0))
      compiled[model_name, formulation, size] = call
      calls[model_name, formulation, size] = _Training(call.executable, population, split,
                                                       steps)
  timings = timing.interleaved_timings(calls, repeats)
  rows = []
  for (model_name, formulation, size), run in timings.items():
    per_step = run.ms / steps
    single = timings[model_name, "unrolled", 1].ms / steps
    call = compiled[model_name, formulation, size]
    rows.append({
        "model": model_name, "formulation": formulation, "size": size,
        "compile_s": call.compile_s, "ms_per_step": per_step,
        "member_steps_per_s": 1e3 * size / per_step, "vs_single_run": size * single / per_step,
        "cores_busy": run.cores_busy,
        "peak_mib_per_member": timing.memory_stats(call.executable)["peak"]
        / timing.BYTES_PER_MIB / size})
  config = {"model_names": list(model_names), "sizes": list(sizes), "batch_size": batch_size,
            "steps": steps, "repeats": repeats, "num_examples": NUM_EXAMPLES,
            "image_shape": list(image_shape), "formulations": list(formulations)}
  return result_record.new_record("population", config, rows=rows)


def format_population_report(record: dict[str, Any]) -> str:
  """The table of a `run_population_benchmark` record."""
  cfg = record["config"]
  lines = [f"batch {cfg['batch_size']} per member, {record['device']['device_kind']}, median of "
           f"{cfg['repeats']} x {cfg['steps']} steps; vs single run = member throughput / that "
           "of P = 1 unrolled",
           f"{'model':<14} {'formulation':<11} {'P':>3} {'compile s':>10} {'ms/step':>9} "
           f"{'member steps/s':>15} {'vs single run':>14} {'cores busy':>11} "
           f"{'peak MiB/member':>16}"]
  lines += [f"{r['model']:<14} {r['formulation']:<11} {r['size']:>3} {r['compile_s']:>10.1f} "
            f"{r['ms_per_step']:>9.2f} {r['member_steps_per_s']:>15.0f} "
            f"{r['vs_single_run']:>13.2f}x {r['cores_busy']:>11.2f} "
            f"{r['peak_mib_per_member']:>16.1f}"
            for r in record["rows"]]
  return "\n".join(lines)
