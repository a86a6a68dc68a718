"""Prune at initialization, then train the masked network: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from prospr_jax import masks as masks_lib
from prospr_jax import models, structured
from prospr_jax.adapters import LinenApply, LinenLoss
from prospr_jax.analysis import connectivity, sanity
from prospr_jax.experiment import (
    atomic_files, config_checks, distributed, epoch_metrics, peer_watch, progress, provenance,
    prune_config, run_data, run_plan)
from prospr_jax.experiment.data import DatasetInfo, device_data
from prospr_jax.experiment.scalar_summaries import ScalarWriter
from prospr_jax.experiment.train_step import (
    TrainHyperparams,
    TrainState,
    eval_step,
    learning_rate_schedule,
    make_optimizer,
    train_step,
)
from prospr_jax.saliency import registry
from prospr_jax.tree_types import PyTree

DENSE = prune_config.DENSE
_log = logging.getLogger(__name__)


def report(msg: str, *args: Any) -> None:
  """Logs `msg % args` at INFO on process 0 only (one line per run, not per process)."""
  if jax.process_index() == 0:
    _log.info(msg, *args)


def evaluate(state: TrainState, batches: Iterator[PyTree]) -> dict[str, float]:
  """Test loss, top-1 and top-5 accuracy over one pass of `batches`."""
  sums = None
  for batch in batches:
    out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  count = float(sums["count"])
  return {k: float(sums[k]) / count for k in ("loss", "top1", "top5")}


def prune_at_init(
    prune: prune_config.PrunePlan,
    model: nn.Module,
    variables: PyTree,
    input_shape: tuple[int, ...],
    key: jax.Array,
    batches: Sequence[PyTree] | None = None,
) -> PyTree:
  """Bool masks for `variables['params']` as `prune` says (all True for 'dense').

  `prune.sanity_check == 'invert'` keeps each layer's lowest-scored weights instead (see
  `prospr_jax.analysis.sanity`). With `prune.structured`, channel-group masks from
  `structured.structured_prune` (`sparsity` is then the fraction of channels removed,
  `min_kept_per_layer` the minimum kept per channel group; the head is never pruned).
  `batches`: the method's scoring batches (`pruning_batches`). BatchNorm runs in
  `prune.batchnorm_mode` while scoring.
  """
  params = variables["params"]
  if prune.method == DENSE:
    return masks_lib.ones_masks(params, dtype=bool)
  state = {k: v for k, v in variables.items() if k != "params"}
  loss_fn = (
      LinenLoss(model, bn_mode=prune.batchnorm_mode, **prune.loss_options)
      if "loss_fn" in prune.needs else None
  )
  if prune.structured:  # coupled channel groups (see prospr_jax.structured)
    return structured.structured_prune(
        prune.method, model, variables, batches, prune.sparsity,
        example_input=jax.ShapeDtypeStruct((1, *input_shape), jnp.float32), key=key,
        min_kept_per_group=prune.min_kept_per_layer, allocation=prune.allocation,
        loss_fn=loss_fn, **prune.options,
    )
  apply_fn = (LinenApply(model, state, bn_mode=prune.batchnorm_mode)
              if "apply_fn" in prune.needs else None)
  return registry.prune(
      prune.method, params, prune.sparsity,
      loss_fn=loss_fn, batches=batches, state=state, apply_fn=apply_fn,
      input_shape=input_shape, key=key, filter_fn=prune.filter_fn,
      allocation=prune.allocation, min_kept_per_layer=prune.min_kept_per_layer,
      invert=prune.sanity_check == "invert", **prune.options,
  )


def find_masks(
    prune: prune_config.PrunePlan,
    model: nn.Module,
    variables: PyTree,
    input_shape: tuple[int, ...],
    key: jax.Array,
    load_batches: Callable[[], Sequence[PyTree] | None] = lambda: None,
    save_path: str | None = None,
) -> tuple[PyTree, dict[str, Any]]:
  """The masks `train_and_evaluate` trains with, and what it records about finding them.

  Loads the scoring batches (`load_batches()`) and prunes `variables` (`prune_at_init`); with
  `prune.sanity_check == 'shuffle'` the kept positions are then permuted within each layer.
  With `save_path` the masks are written there (`masks.save_masks`) as soon as they are found.
  Returns the masks and `{'prune_seconds', 'connectivity'}`: the wall time of these steps (data
  loading included) and the masks' effective sparsity and collapsed layers
  (`prospr_jax.analysis.connectivity`, on `variables`).
  """
  start = time.perf_counter()
  masks = prune_at_init(prune, model, variables, input_shape, key, load_batches())
  if prune.sanity_check == "shuffle":
    masks = sanity.shuffle_within_layers(masks, jax.random.fold_in(key, 1), prune.filter_fn)
  masks = jax.block_until_ready(masks)
  seconds = time.perf_counter() - start
  if save_path is not None:
    masks_lib.save_masks(save_path, masks)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  full_masks = jax.tree.map(lambda m, p: jnp.broadcast_to(m, p.shape), masks, params)
  effective = connectivity.effective_masks(
      full_masks, params, apply_fn=LinenApply(model, state), input_shape=input_shape,
      filter_fn=prune.filter_fn,
  )
  summary = connectivity.connectivity_summary(full_masks, effective, prune.filter_fn)
  return masks, {"prune_seconds": seconds, "connectivity": summary}


_LAUNCH_FIELDS = ("distributed",)
"""Config fields that say how a run is launched, not what it computes (a run may resume on
another topology)."""


def claim_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config.json` to `workdir` (process 0), refusing a workdir of another run's config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    changed = config_checks.differences(previous, current, ignore=_LAUNCH_FIELDS)
    if changed:
      raise ValueError(
          f"{workdir} holds a run with a different config: {'; '.join(changed)}. Use another "
          "--workdir or delete that one."
      )
  if jax.process_index() == 0:
    atomic_files.write_json(path, current)


def create_train_state(
    hyperparams: TrainHyperparams,
    model: nn.Module,
    variables: PyTree,
    masks: PyTree,
    schedule: optax.Schedule,
) -> TrainState:
  """A `TrainState` with masked initial params and the keep_masked optimizer of `hyperparams`
  (`config.train`; see `distributed.replicate` to place it on a mesh)."""
  return TrainState.create(
      apply_fn=model.apply,
      params=masks_lib.apply_masks(variables["params"], masks),
      tx=make_optimizer(hyperparams, schedule, masks),
      batch_stats=variables.get("batch_stats", {}),
      masks=masks,
  )


def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
  """Orbax manager for `<workdir>/checkpoints`, keeping the 2 latest checkpoints."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
  )


def save_checkpoint(
    manager: ocp.CheckpointManager, state: TrainState, meta: dict[str, Any]
) -> None:
  """Saves the whole train state (params, optimizer state, statistics, masks, step) and `meta`."""
  manager.save(
      int(state.step),
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
  )


def _root_cause_line(error: BaseException, limit: int = 300) -> str:
  """The type and first message line of the exception at the root of `error`'s chain (orbax
  wraps the informative tensorstore error in one that prints a whole spec), at most `limit`
  characters."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  lines = str(error).strip().splitlines() or [""]
  return f"{type(error).__name__}: {lines[0]}"[:limit]


def restore_checkpoint(
    manager: ocp.CheckpointManager, like: TrainState
) -> tuple[TrainState, dict[str, Any]]:
  """Restores the newest intact checkpoint into the structure and shardings of `like`.

  A checkpoint that fails to restore (damaged or truncated files) gets a one-line warning (its
  step, the error) and the previous one is tried; once one restores, the damaged newer ones are
  deleted (the run saves those steps again).

  Raises:
    RuntimeError: no checkpoint restores (they are left on disk).
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
  failed = {}
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except (orbax and tensorstore raise many kinds)
      failed[step] = _root_cause_line(e)
      _log.warning("The checkpoint at step %d in %s does not restore (%s); trying the previous "
                   "one.", step, manager.directory, failed[step])
      continue
    for bad_step in failed:
      manager.delete(bad_step)
    return restored.state, restored.meta
  raise RuntimeError(
      f"No checkpoint in {manager.directory} restores: "
      + "; ".join(f"step {step}: {why}" for step, why in failed.items())
      + ". Delete the workdir (or use another --workdir) to start the run over."
  )


def _restore_latest(
    hyperparams: TrainHyperparams,
    model: nn.Module,
    variables: PyTree,
    schedule: optax.Schedule,
    workdir: str,
    manager: ocp.CheckpointManager,
    mesh: Mesh,
) -> tuple[TrainState, dict[str, Any]]:
  """The latest checkpointed state of the run in `workdir`, replicated over `mesh`, and its
  metadata."""
  # The saved masks give the template its mask shapes (per-channel masks are not full-size).
  saved_masks = masks_lib.load_masks(os.path.join(workdir, "masks.npz"), variables["params"])
  template = create_train_state(hyperparams, model, variables, saved_masks, schedule)
  return restore_checkpoint(manager, distributed.replicate(template, mesh))


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, nn.Module, TrainState]:
  """The config, model and latest checkpointed train state of a run written to `workdir`."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  info = device_data.dataset_info(config.dataset, config.data_dir)
  model = models.get_model(config.model, info.num_classes)
  variables = models.init_variables(model, jax.random.PRNGKey(0), info.image_shape)
  state, _ = _restore_latest(config.train, model, variables, optax.constant_schedule(0.0),
                             workdir, checkpoint_manager(workdir), distributed.data_mesh())
  return config, model, state


def _write_summaries(
    writer: ScalarWriter | None, step: int, values: dict[str, float]
) -> None:
  """Writes `values` as TensorBoard scalars at `step`; `writer` is None off process 0."""
  if writer is None:
    return
  for tag, value in values.items():
    writer.scalar(tag, value, step)
  writer.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Prunes a freshly initialized model, trains it masked and evaluates it every epoch.

  Data-parallel over all devices of all processes (batch sharded, state replicated); the
  global batches, hence the results, do not depend on the number of devices or processes.
  The config is checked (`run_plan.plan_run`) before any file is written. Process 0 writes to
  `workdir`: `config.json`; `masks.npz` (bool masks, see `masks.load_masks`); TensorBoard
  summaries; `results.json` (config, final/best test accuracy, per-layer density, pruning and
  training seconds); all processes write the orbax checkpoints of the whole train state in
  `checkpoints/` every `config.train.checkpoint_every_steps` steps and at the end. A rerun
  with the same config resumes from the latest checkpoint (same final params as an
  uninterrupted run); a workdir holding another config is refused. Progress goes to the
  `prospr_jax` logger (see `progress.show_on`). Returns the results dict.

  In-memory data sets (`data.device_data.IN_MEMORY_SETS`) are copied to every device and
  batched there (no TensorFlow); others are read with tf.data (`run_data`).

  Divergence: a training loss that is NaN or inf (found at the next end of epoch or checkpoint
  step) stops the run; it is not checkpointed, and `results.json` records
  `'diverged': {'step': N}` (N: the 1-based number of the first step with a non-finite loss),
  the history of the epochs before it, and `final_test_top1`/`final_test_top5` None (the
  network is not evaluated); `best_test_top1` is the best of the earlier evaluations (None if
  none). Runs that did not diverge record `'diverged': None`.

  Raises:
    config_checks.ConfigError: the config cannot run (`run_plan.plan_run`: a bad field, the data
      set missing) or `workdir` holds another config; nothing is written.
  """
  plan, mesh = _set_up(config, workdir)
  with peer_watch.watching_peers(config.distributed.heartbeat_timeout_s) as watch:
    return _prune_train_and_report(config, workdir, plan, mesh, watch)


def _prune_train_and_report(config: ml_collections.ConfigDict, workdir: str,
                            plan: run_plan.RunPlan, mesh: Mesh,
                            watch: peer_watch.PeerWatch) -> dict[str, Any]:
  """`train_and_evaluate` after its set-up: prunes (or resumes), trains, writes the results."""
  init_key, prune_key = jax.random.split(jax.random.PRNGKey(plan.seed))
  variables, train_variables = initial_variables(plan, init_key, mesh)
  schedule = learning_rate_schedule(plan.train.hyperparams, plan.train.steps_per_epoch)
  manager = checkpoint_manager(workdir)
  data = run_data.run_data(plan, mesh)
  state, meta = _prune_or_resume(plan, variables, train_variables, prune_key, schedule, manager,
                                 workdir, mesh, data)
  density = masks_lib.density_summary(state.masks, state.params, plan.prune.filter_fn)
  report("pruned with %s in %s: %.2f%% of the prunable weights kept", plan.prune.method,
          progress.format_duration(meta["prune_seconds"]), 100 * density["density/total"])
  writer = (ScalarWriter(os.path.join(workdir, "tensorboard"))
            if jax.process_index() == 0 else None)
  _write_summaries(writer, 0, density)
  _train(plan, state, meta, schedule, manager, writer, data, watch)
  if writer is not None:
    writer.close()
  return write_results(config, workdir, plan.data.info, density, meta)


def _set_up(config: ml_collections.ConfigDict, workdir: str) -> tuple[run_plan.RunPlan, Mesh]:
  """Joins a multi-process run (`config.distributed`), checks `config` (`run_plan.plan_run`)
  and claims `workdir` for it; returns the run's plan and the mesh of all devices."""
  distributed.initialize_distributed(config.distributed)
  mesh = distributed.data_mesh()
  with config_checks.refusing_as_config_error():
    plan = run_plan.plan_run(config, mesh)
    claim_workdir(config, workdir)
  info = plan.data.info
  report("%s (%d train / %d test images), %s, %d device(s) in %d process(es)", info.name,
          info.num_train, info.num_test, config.model, jax.device_count(), jax.process_count())
  return plan, mesh


def initial_variables(
    plan: run_plan.RunPlan, init_key: jax.Array, mesh: Mesh
) -> tuple[PyTree, PyTree]:
  """The variables pruning scores (from `init_key`) and those training starts from, replicated
  over `mesh`: the same, except for the 'reinit' sanity check (a fresh initialization)."""
  shape = plan.data.info.image_shape
  variables = distributed.replicate(models.init_variables(plan.model, init_key, shape), mesh)
  if plan.prune.sanity_check != "reinit":
    return variables, variables
  fresh = models.init_variables(plan.model, jax.random.fold_in(init_key, 1), shape)
  return variables, distributed.replicate(fresh, mesh)


def _prune_or_resume(
    plan: run_plan.RunPlan,
    variables: PyTree,
    train_variables: PyTree,
    prune_key: jax.Array,
    schedule: optax.Schedule,
    manager: ocp.CheckpointManager,
    workdir: str,
    mesh: Mesh,
    data: run_data.RunData,
) -> tuple[TrainState, dict[str, Any]]:
  """The train state to train from, on `mesh`, and the run's metadata: a new run prunes
  (`prune_and_start`, scoring on `data`'s pruning batches), one with a checkpoint resumes
  from its latest."""
  if manager.latest_step() is None:
    return prune_and_start(plan, variables, train_variables, prune_key, schedule, workdir,
                            mesh, data)
  state, meta = _restore_latest(plan.train.hyperparams, plan.model, train_variables, schedule,
                                workdir, manager, mesh)
  report("Resumed from the checkpoint at step %d.", int(state.step))
  return state, start_meta() | meta  # checkpoints of older versions lack the newer fields


def prune_and_start(
    plan: run_plan.RunPlan,
    variables: PyTree,
    train_variables: PyTree,
    key: jax.Array,
    schedule: optax.Schedule,
    workdir: str,
    mesh: Mesh,
    data: run_data.RunData,
) -> tuple[TrainState, dict[str, Any]]:
  """Finds the masks (`find_masks`; process 0 saves them to `masks.npz` as soon as they are
  found) and returns the initial train state on `mesh` and the run's metadata (what pruning
  recorded, no history)."""
  report("pruning with %s ...", plan.prune.method)
  save_path = os.path.join(workdir, "masks.npz") if jax.process_index() == 0 else None
  masks, meta = find_masks(plan.prune, plan.model, variables, plan.data.info.image_shape, key,
                           data.pruning_batches, save_path)
  meta |= start_meta()
  state = distributed.replicate(
      create_train_state(plan.train.hyperparams, plan.model, train_variables, masks, schedule),
      mesh)
  return state, meta


def start_meta() -> dict[str, Any]:
  """The training part of a new run's metadata: no time, history, epoch sums or divergence."""
  return {"train_seconds": 0.0, "history": [], "epoch_sums": epoch_metrics.empty_sums(),
          "diverged": None}


def _train(
    plan: run_plan.RunPlan,
    state: TrainState,
    meta: dict[str, Any],
    schedule: optax.Schedule,
    manager: ocp.CheckpointManager,
    writer: ScalarWriter | None,
    data: run_data.RunData,
    watch: peer_watch.PeerWatch,
) -> None:
  """Trains from `state` to `plan.train.total_steps`, evaluating at the ends of epochs and
  checkpointing (the trained state is the last checkpoint); appends the epochs' records to
  `meta['history']`, folds the steps' metrics into `meta['epoch_sums']` and adds the time spent
  to `meta['train_seconds']` (all checkpointed with the state). Stops at a non-finite loss,
  setting `meta['diverged']` (see `train_and_evaluate`). Tells `watch` each step reached."""
  tp = plan.train
  first_step = int(state.step)
  batches = data.train_batches(first_step)
  meter = progress.Progress(first_step, tp.total_steps, tp.steps_per_epoch)
  start, pending = time.perf_counter(), []
  for step in range(first_step + 1, tp.total_steps + 1):
    state, m = train_step(state, next(batches))
    watch.step = step
    pending.append(m)
    if step % tp.log_every_steps == 0:
      line, rate = meter.line(step, float(m["loss"]))
      report("%s", line)
      _write_summaries(writer, step, {"train/loss": float(m["loss"]), "steps_per_second": rate,
                                      "learning_rate": float(schedule(step))})
    end_of_epoch = step % tp.steps_per_epoch == 0
    checkpoint = step % tp.checkpoint_every_steps == 0 or step == tp.total_steps
    if not (end_of_epoch or checkpoint):
      continue
    diverged_at = epoch_metrics.fold(meta["epoch_sums"], [x["loss"] for x in pending],
                                     [x["accuracy"] for x in pending], step - len(pending) + 1)
    pending = []
    if diverged_at is not None:
      meta["diverged"] = {"step": diverged_at}
      report("DIVERGED: the training loss of step %d is not finite; the run stops there.",
              diverged_at)
      break
    if end_of_epoch:
      epoch = step // tp.steps_per_epoch
      test = epoch % tp.eval_every_epochs == 0 or epoch == tp.num_epochs
      record = epoch_metrics.epoch_record(epoch, meta["epoch_sums"])
      meta["epoch_sums"] = epoch_metrics.empty_sums()
      if test:
        record |= {f"test_{k}": v for k, v in evaluate(state, data.eval_batches()).items()}
      _report_epoch(record, tp.num_epochs)
      meta["history"].append(record)
      _write_summaries(writer, step, {k: v for k, v in record.items() if k != "epoch"})
    if not checkpoint:
      continue
    meta["train_seconds"] += time.perf_counter() - start
    start = time.perf_counter()
    save_checkpoint(manager, state, meta)
  manager.wait_until_finished()


def _report_epoch(record: dict[str, float], num_epochs: int) -> None:
  """Logs an epoch's record: its train loss and, if tested, its test top-1 accuracy."""
  line = f"epoch {record['epoch']}/{num_epochs} done: train loss {record['train_loss']:.4f}"
  if "test_top1" in record:
    line += f", test top-1 {100 * record['test_top1']:.2f}%"
  report("%s", line)


def results_dict(
    config: ml_collections.ConfigDict,
    info: DatasetInfo,
    density: dict[str, float],
    meta: dict[str, Any],
) -> dict[str, Any]:
  """A run's `results.json` content (see `train_and_evaluate`) from its metadata."""
  history = meta["history"]
  diverged = meta.get("diverged")
  tested = [h["test_top1"] for h in history if "test_top1" in h]
  return {
      "config": json.loads(config.to_json()),
      "final_test_top1": None if diverged else history[-1]["test_top1"],
      "best_test_top1": max(tested) if tested else None,
      "final_test_top5": (history[-1]["test_top5"]
                          if info.num_classes > 10 and not diverged else None),
      "diverged": diverged,
      "density": density,
      "prune_seconds": meta["prune_seconds"],
      "train_seconds": meta["train_seconds"],
      "connectivity": meta["connectivity"],
      "history": history,
      "provenance": provenance.provenance(),
  }


def write_results(
    config: ml_collections.ConfigDict,
    workdir: str,
    info: DatasetInfo,
    density: dict[str, float],
    meta: dict[str, Any],
) -> dict[str, Any]:
  """The run's results (`results_dict`); process 0 writes them to `results.json`."""
  results = results_dict(config, info, density, meta)
  if jax.process_index() == 0:
    atomic_files.write_json(os.path.join(workdir, "results.json"), results)
  return results
