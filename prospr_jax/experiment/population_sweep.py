"""Train several sweep runs as one population: `train_population(configs, workdirs, pop_dir)`.

The runs of a sweep that differ only in their pruning (method, sparsity, allocation, sanity
check) and seed (`run_grouping.MEMBER_FIELDS`) share the model, data, optimizer and schedule:
they are trained together by one jitted step (`prospr_jax.experiment.population`). Each
member is pruned by its own method exactly as a single run is (`train.prune_and_start`: same
initialization, pruning batches and `masks.npz`), trains on the batches a single run with its
seed gets (`data.device_batches`), and writes the `results.json` a single run writes
(`train.write_results`: config, accuracy, density, connectivity, history, provenance), so
collections and reports read members and single runs alike. A member's params agree with its
single run's to float32 rounding (XLA fuses the population's program differently), so its
accuracies are its single run's (in `tests/test_population_sweep.py`, exactly).

The population checkpoints itself (orbax, `<pop_dir>/checkpoints`: every member's state, data
order and divergence flags, and their metadata) every `train.checkpoint_every_steps` steps and
at the end; rerunning with the same members resumes from the latest checkpoint to the result
of an uninterrupted run. A member whose training loss or params become NaN or inf is frozen and
its `results.json` records `'diverged': {'step': N}` (as a single run's, see
`train.train_and_evaluate`); the others train on. A member's `train_seconds` is the
population's training time divided by the number of members.

Several devices, one process or several (`config.distributed`, every process running the same
sweep over a file system they all see): the members are sharded over all devices
(`population.members_mesh`; each device trains P / devices of them, with the data set
replicated on every device) when the device count divides P; otherwise every device trains the
whole population. Pruning is data-parallel over all devices, as in a single run; process 0
writes the files.

Limits: in-memory data sets only (`data.device_data.IN_MEMORY_SETS`). No TensorBoard
summaries are written for members.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from prospr_jax import masks as masks_lib
from prospr_jax.experiment import (
    distributed, epoch_metrics, population, run_data, run_grouping, run_plan, train)
from prospr_jax.experiment.data import device_batches, device_data
from prospr_jax.experiment.train_step import TrainState, learning_rate_schedule

_CPU_SIZE, _ACCELERATOR_SIZE = 8, 32


def default_population_size(backend: str | None = None) -> int:
  """Members per population: 8 on CPU, 32 on GPU/TPU.

  On CPU, population training ('unrolled') was measured ~1.3x faster per run than single runs
  at P=8 (small_convnet and lenet300100); larger P only lengthens compilation. On accelerators
  one batched step ('vmap') of small models is bound by launch overhead, not compute, so
  larger populations amortize it further; memory grows linearly in P (params, optimizer state
  and data order per member).
  """
  return _CPU_SIZE if (backend or jax.default_backend()) == "cpu" else _ACCELERATOR_SIZE


def check_population_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, naming the field, unless runs of `config` can train as a population."""
  if not device_data.fits_in_memory(config.dataset):
    raise ValueError(
        f"config.dataset={config.dataset!r} cannot train as a population: populations need an "
        f"in-memory data set ({', '.join(device_data.IN_MEMORY_SETS)}). Use "
        "--population_size=1.")


def _check_members(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ValueError naming the first field outside `run_grouping.MEMBER_FIELDS` in which two
  differ."""
  first = run_grouping.config_fields(configs[0])
  for index, config in enumerate(configs[1:], start=1):
    flat = run_grouping.config_fields(config)
    differ = sorted(k for k in set(first) | set(flat)
                    if k not in run_grouping.MEMBER_FIELDS and first.get(k) != flat.get(k))
    if differ:
      raise ValueError(f"Run {index} cannot join run 0's population: config.{differ[0]} differs "
                       f"({flat.get(differ[0])!r} vs {first.get(differ[0])!r}).")


class _Member:
  """One run of a population: its config, workdir, plan and initial variables."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh):
    self.config, self.workdir = config, workdir
    self.plan = run_plan.plan_run(config, mesh)
    init_key, self.prune_key = jax.random.split(jax.random.PRNGKey(self.plan.seed))
    self.variables, self.train_variables = train.initial_variables(
        self.plan, init_key, mesh)


def _save(manager: ocp.CheckpointManager, step: int, pop: population.Population,
          metas: list[dict[str, Any]]) -> None:
  """Checkpoints `pop` and its members' metadata at `step` (1-based steps done)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(pop),
                                             meta=ocp.args.JsonSave({"members": metas})))


def _restore(manager: ocp.CheckpointManager, like: population.Population
             ) -> tuple[population.Population, list[dict[str, Any]]]:
  """The latest checkpoint, in the structure and shardings of `like`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return restored.state, restored.meta["members"]


def train_population(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                     pop_dir: str, formulation: str | None = None) -> list[dict[str, Any]]:
  """Prunes and trains the runs `configs` (in `workdirs`) as one population; returns their
  results (also written to each `<workdir>/results.json`). See the module docstring.

  Args:
    configs: run configs that differ only in `run_grouping.MEMBER_FIELDS`.
    workdirs: each run's directory (`config.json`, `masks.npz`, `results.json`).
    pop_dir: the population's directory (its checkpoints).
    formulation: 'vmap' or 'unrolled'; None: `population.default_formulation()`.

  Raises:
    ValueError: no configs, a config that cannot train as a population
      (`check_population_config`), configs differing in another field (named), or a workdir of
      another run's config.
  """
  if not configs or len(configs) != len(workdirs):
    raise ValueError(f"{len(configs)} configs for {len(workdirs)} workdirs; need one each.")
  check_population_config(configs[0])
  _check_members(configs)
  distributed.initialize_distributed(configs[0].distributed)
  mesh = distributed.data_mesh()
  members = [_Member(c, w, mesh) for c, w in zip(configs, workdirs)]
  for member in members:
    train.claim_workdir(member.config, member.workdir)
  plan = members[0].plan
  tp = plan.train
  schedule = learning_rate_schedule(tp.hyperparams, tp.steps_per_epoch)
  data = device_data.put_data(plan.data.info.name, plan.data.data_dir, tp.eval_batch_size,
                              population.replicated(mesh))
  manager = train.checkpoint_manager(pop_dir)
  pop, metas = _prune_or_resume(members, schedule, manager, mesh, data)
  densities = []
  for index, member in enumerate(members):
    state = population.member_state(pop, index)
    densities.append(masks_lib.density_summary(state.masks, state.params,
                                               member.plan.prune.filter_fn))
  _train(plan, pop, metas, manager, data, formulation)
  results = []
  for member, density, meta in zip(members, densities, metas):
    results.append(train.write_results(member.config, member.workdir, plan.data.info,
                                       density, meta))
  return results


def _prune_or_resume(members: Sequence[_Member], schedule, manager: ocp.CheckpointManager,
                     mesh: jax.sharding.Mesh, data: device_data.DeviceData
                     ) -> tuple[population.Population, list[dict[str, Any]]]:
  """The population to train from and its members' metadata: the latest checkpoint, or each
  member pruned as a single run (`train.prune_and_start`, saving its `masks.npz`)."""
  num_train = data.train.num_examples
  seeds = [m.plan.seed for m in members]
  if manager.latest_step() is None:
    states, metas = [], []
    for member in members:
      state, meta = train.prune_and_start(
          member.plan, member.variables, member.train_variables, member.prune_key, schedule,
          member.workdir, mesh, run_data.DeviceRunData(member.plan, mesh, data))
      states.append(state)
      metas.append(meta)
    return distributed.replicate(population.create_population(states, seeds, num_train),
                                 mesh), metas
  templates = [_template(m, schedule) for m in members]
  like = distributed.replicate(population.create_population(templates, seeds, num_train), mesh)
  pop, metas = _restore(manager, like)
  train.report("Resumed the population of %d from the checkpoint at step %d.",
                len(members), manager.latest_step())
  return pop, metas


def _template(member: _Member, schedule) -> TrainState:
  """A member's train state with its saved masks (whose shapes the checkpoint needs)."""
  masks = masks_lib.load_masks(os.path.join(member.workdir, "masks.npz"),
                               member.variables["params"])
  return train.create_train_state(member.plan.train.hyperparams, member.plan.model,
                                  member.train_variables, masks, schedule)


def _fold_members(metas: list[dict[str, Any]], pending: list[dict[str, jax.Array]],
                  first_step: int, pop: population.Population) -> None:
  """Folds the metrics of steps `first_step, ...` (1-based; `pending`, [P] each) into each
  live member's epoch sums, up to its divergence, which it records (`'diverged'`)."""
  metrics = distributed.to_host(jax.tree.map(lambda *steps: jnp.stack(steps), *pending))
  losses, accuracies = metrics["loss"], metrics["accuracy"]  # [steps, P]
  diverged_at = distributed.to_host(pop.diverged_at)  # 0-based step, -1: never
  for i, meta in enumerate(metas):
    if meta["diverged"] is not None:
      continue
    steps = len(pending) if diverged_at[i] < 0 else diverged_at[i] + 1 - first_step
    epoch_metrics.fold(meta["epoch_sums"], losses[:steps, i], accuracies[:steps, i], first_step)
    if diverged_at[i] >= 0:
      meta["diverged"] = {"step": int(diverged_at[i]) + 1}
      train.report("DIVERGED: member %d's training loss or params at step %d are not "
                    "finite; it is frozen, the others train on.", i, diverged_at[i] + 1)


def _placed(pop: population.Population
            ) -> tuple[population.Population, jax.sharding.Mesh | None]:
  """`pop` with its members sharded over every device and that mesh, when the device count
  divides the number of members; else `pop` as it is (replicated) and None."""
  mesh = population.members_mesh()
  if mesh.size == 1 or pop.size % mesh.size:
    if mesh.size > 1:
      train.report("%d members do not divide over %d devices: every device trains all of "
                    "them.", pop.size, mesh.size)
    return pop, None
  return population.place_population(pop, mesh), mesh


def _train(plan: run_plan.RunPlan, pop: population.Population, metas: list[dict[str, Any]],
           manager: ocp.CheckpointManager, data: device_data.DeviceData,
           formulation: str | None) -> None:
  """Trains `pop` to `plan.train.total_steps`, appending each live member's epoch records to
  its `metas[i]['history']` and checkpointing as a single run does (`train._train`)."""
  tp = plan.train
  batching = device_batches.Batching(tp.batch_size, tp.steps_per_epoch, plan.data.augment)
  first_step = int(np.asarray(pop.train.step).max())  # replicated: every process holds it
  pop, mesh = _placed(pop)
  step_fn = population.make_train_step(batching, formulation, mesh)
  evaluate_sums = population.make_evaluate_sums(formulation, mesh)
  start, pending = time.perf_counter(), []
  for step in range(first_step + 1, tp.total_steps + 1):
    pop, metrics = step_fn(pop, data.train, np.int32(step - 1))
    pending.append(metrics)
    end_of_epoch = step % tp.steps_per_epoch == 0
    checkpoint = step % tp.checkpoint_every_steps == 0 or step == tp.total_steps
    if not (end_of_epoch or checkpoint):
      continue
    _fold_members(metas, pending, step - len(pending) + 1, pop)
    pending = []
    if end_of_epoch:
      epoch = step // tp.steps_per_epoch
      test = (distributed.to_host(evaluate_sums(pop, data.test))
              if epoch % tp.eval_every_epochs == 0 or epoch == tp.num_epochs else None)
      for i, meta in enumerate(metas):
        if meta["diverged"] is None:
          record = epoch_metrics.epoch_record(epoch, meta["epoch_sums"])
          if test is not None:
            count = float(test["count"][i])  # means as a single run computes them
            record |= {f"test_{k}": float(test[k][i]) / count for k in ("loss", "top1", "top5")}
          meta["history"].append(record)
        meta["epoch_sums"] = epoch_metrics.empty_sums()
      train.report("population epoch %d/%d done: %d of %d members live", epoch,
                    tp.num_epochs, sum(m["diverged"] is None for m in metas), len(metas))
    if checkpoint:
      seconds = (time.perf_counter() - start) / len(metas)
      start = time.perf_counter()
      for meta in metas:
        meta["train_seconds"] += seconds
      _save(manager, step, pop, metas)
  manager.wait_until_finished()
