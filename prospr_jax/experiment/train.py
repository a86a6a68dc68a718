"""Prune at initialization, then train the masked network: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.metrics import tensorboard
from jax.sharding import Mesh

from prospr_jax.experiment import atomic_files
from prospr_jax.experiment import data as data_lib
from prospr_jax import masks as masks_lib
from prospr_jax.analysis import connectivity, sanity
from prospr_jax import models
from prospr_jax.experiment import distributed, progress, provenance, prune_config
from prospr_jax import structured
from prospr_jax.adapters import LinenApply, LinenLoss
from prospr_jax.saliency import registry
from prospr_jax.experiment.train_step import TrainState, learning_rate_schedule, make_optimizer, train_step
from prospr_jax.tree_types import PyTree

DENSE = prune_config.DENSE
_log = logging.getLogger(__name__)


def _report(msg: str, *args: Any) -> None:
  """Logs `msg % args` at INFO on process 0 only (one line per run, not per process)."""
  if jax.process_index() == 0:
    _log.info(msg, *args)


@jax.jit
def eval_step(state: TrainState, batch: PyTree) -> dict[str, jax.Array]:
  """Sums over the real examples of `batch` (its 'mask'): count, loss, top-1 and top-5 hits."""
  logits = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
  )
  weight = batch["mask"].astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return {
      "count": weight.sum(),
      "loss": (losses * weight).sum(),
      "top1": ((jnp.argmax(logits, -1) == batch["label"]) * weight).sum(),
      "top5": ((top5 == batch["label"][:, None]).any(-1) * weight).sum(),
  }


def evaluate(state: TrainState, batches: Iterator[PyTree]) -> dict[str, float]:
  """Test loss, top-1 and top-5 accuracy over one pass of `batches`."""
  sums = None
  for batch in batches:
    out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  count = float(sums["count"])
  return {k: float(sums[k]) / count for k in ("loss", "top1", "top5")}


def prune_at_init(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    variables: PyTree,
    input_shape: tuple[int, ...],
    key: jax.Array,
    mesh: Mesh,
) -> PyTree:
  """Bool masks for `variables['params']` from `config.prune` (all True for 'dense').

  `config.prune.sanity_check == 'invert'` keeps each layer's lowest-scored weights instead
  (see `prospr_jax.analysis.sanity`). With `config.prune.structured`, channel-group masks from `structured.structured_prune`
  (`sparsity` is then the fraction of channels removed, `min_kept_per_layer` the minimum
  kept per channel group, `exclude` is not used: the head is never pruned). Pruning batches
  of `config.prune.batch_size` (global) are drawn from the training split (no augmentation)
  with their own seed; this process feeds its rows of each. BatchNorm runs in
  `prune_config.scoring_batchnorm_mode(config.prune)` while scoring.
  """
  pc = config.prune
  params = variables["params"]
  if pc.method == DENSE:
    return masks_lib.ones_masks(params, dtype=bool)
  state = {k: v for k, v in variables.items() if k != "params"}
  needs = prune_config.method_spec(pc).needs
  batches = None
  if "batches" in needs:
    distributed.check_batch_size(pc.batch_size, mesh)
    stream = data_lib.train_batches(
        config.dataset, batch_size=pc.batch_size, seed=config.seed + 1,
        data_dir=config.data_dir, augment=False, rows=distributed.process_rows(pc.batch_size, mesh),
    )
    batches = [distributed.shard_batch(b, mesh) for b in
               itertools.islice(stream, prune_config.num_pruning_batches(pc))]
  bn_mode = prune_config.scoring_batchnorm_mode(pc)
  loss_fn = (
      LinenLoss(model, bn_mode=bn_mode, **prune_config.loss_options(pc))
      if "loss_fn" in needs else None
  )
  if pc.structured:  # coupled channel groups (see prospr_jax.structured)
    if pc.sanity_check is not None:
      raise ValueError("Sanity checks are for unstructured masks; set prune.sanity_check=None "
                       "with prune.structured=True.")
    return structured.structured_prune(
        pc.method, model, variables, batches, pc.sparsity,
        example_input=jax.ShapeDtypeStruct((1, *input_shape), jnp.float32), key=key,
        min_kept_per_group=pc.min_kept_per_layer, allocation=pc.allocation, loss_fn=loss_fn,
        **prune_config.method_options(pc),
    )
  apply_fn = LinenApply(model, state, bn_mode=bn_mode) if "apply_fn" in needs else None
  return registry.prune(
      pc.method, params, pc.sparsity,
      loss_fn=loss_fn, batches=batches, state=state, apply_fn=apply_fn,
      input_shape=input_shape, key=key,
      filter_fn=masks_lib.kernel_filter(exclude=tuple(pc.exclude)),
      allocation=pc.allocation, min_kept_per_layer=pc.min_kept_per_layer,
      invert=pc.sanity_check == "invert",
      **prune_config.method_options(pc),
  )


def find_masks(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    variables: PyTree,
    input_shape: tuple[int, ...],
    key: jax.Array,
    mesh: Mesh,
) -> tuple[PyTree, dict[str, Any]]:
  """The masks `train_and_evaluate` trains with, and what it records about finding them.

  Prunes `variables` (`prune_at_init`); with `config.prune.sanity_check == 'shuffle'` the kept
  positions are then permuted within each layer. Returns the masks and `{'prune_seconds',
  'connectivity'}`: the wall time of both steps and the masks' effective sparsity and
  collapsed layers (`prospr_jax.analysis.connectivity`, on `variables`).
  """
  pc = config.prune
  start = time.perf_counter()
  masks = prune_at_init(config, model, variables, input_shape, key, mesh)
  filter_fn = masks_lib.kernel_filter(exclude=tuple(pc.exclude))
  if pc.sanity_check == "shuffle":
    masks = sanity.shuffle_within_layers(masks, jax.random.fold_in(key, 1), filter_fn)
  masks = jax.block_until_ready(masks)
  seconds = time.perf_counter() - start
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  full_masks = jax.tree.map(lambda m, p: jnp.broadcast_to(m, p.shape), masks, params)
  effective = connectivity.effective_masks(
      full_masks, params, apply_fn=LinenApply(model, state), input_shape=input_shape,
      filter_fn=filter_fn,
  )
  summary = connectivity.connectivity_summary(full_masks, effective, filter_fn)
  return masks, {"prune_seconds": seconds, "connectivity": summary}


_LAUNCH_FIELDS = ("distributed",)
"""Config fields that say how a run is launched, not what it computes (a run may resume on
another topology)."""


def _claim_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config.json` to `workdir` (process 0), refusing a workdir of another run's config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    changed = sorted(k for k in set(previous) | set(current)
                     if k not in _LAUNCH_FIELDS and previous.get(k) != current.get(k))
    if changed:
      raise ValueError(
          f"{workdir} holds a run with a different config (differs in {changed}). Use another "
          "--workdir or delete that one."
      )
  if jax.process_index() == 0:
    atomic_files.write_json(path, current)


def create_train_state(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    variables: PyTree,
    masks: PyTree,
    schedule: optax.Schedule,
) -> TrainState:
  """A `TrainState` with masked initial params and the keep_masked optimizer (see
  `distributed.replicate` to place it on a mesh)."""
  return TrainState.create(
      apply_fn=model.apply,
      params=masks_lib.apply_masks(variables["params"], masks),
      tx=make_optimizer(config.train, schedule, masks),
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


def restore_checkpoint(
    manager: ocp.CheckpointManager, like: TrainState
) -> tuple[TrainState, dict[str, Any]]:
  """Restores the latest checkpoint into the structure and shardings of `like`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = manager.restore(
      manager.latest_step(),
      args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                              meta=ocp.args.JsonRestore()),
  )
  return restored.state, restored.meta


def _restore_latest(
    config: ml_collections.ConfigDict,
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
  template = create_train_state(config, model, variables, saved_masks, schedule)
  return restore_checkpoint(manager, distributed.replicate(template, mesh))


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, nn.Module, TrainState]:
  """The config, model and latest checkpointed train state of a run written to `workdir`."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  info = data_lib.get_dataset_info(config.dataset, config.data_dir)
  model = models.get_model(config.model, info.num_classes)
  variables = models.init_variables(model, jax.random.PRNGKey(0), info.image_shape)
  state, _ = _restore_latest(config, model, variables, optax.constant_schedule(0.0), workdir,
                             checkpoint_manager(workdir), distributed.data_mesh())
  return config, model, state


def _write_summaries(
    writer: tensorboard.SummaryWriter | None, step: int, values: dict[str, float]
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
  Process 0 writes to `workdir`: `config.json`; `masks.npz` (bool masks, see
  `masks.load_masks`); TensorBoard summaries; `results.json` (config, final/best test accuracy,
  per-layer density, pruning and training seconds); all processes write the orbax checkpoints
  of the whole train state in `checkpoints/` every `config.train.checkpoint_every_steps` steps
  and at the end. A rerun with the same config resumes from the latest checkpoint (same final
  params as an uninterrupted run); a workdir holding another config is refused. Progress goes
  to the `prospr_jax` logger (see `progress.show_on`). Returns the results dict.
  """
  masks_lib.check_sparsity(config.prune.sparsity)
  prune_config.fields_read(config.prune)  # an unknown method fails before any work
  sanity.check_sanity_check(config.prune.sanity_check)
  distributed.initialize_distributed(config.distributed)
  _claim_workdir(config, workdir)
  mesh = distributed.data_mesh()
  tc = config.train
  for batch_size in (tc.batch_size, tc.eval_batch_size):
    distributed.check_batch_size(batch_size, mesh)
  info = data_lib.get_dataset_info(config.dataset, config.data_dir)
  _report("%s (%d train / %d test images), %s, %d device(s) in %d process(es)", config.dataset,
          info.num_train, info.num_test, config.model, jax.device_count(), jax.process_count())
  model = models.get_model(config.model, info.num_classes)
  init_key, prune_key = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = distributed.replicate(models.init_variables(model, init_key, info.image_shape), mesh)
  if config.prune.sanity_check == "reinit":  # train the mask from a fresh initialization
    train_variables = models.init_variables(model, jax.random.fold_in(init_key, 1),
                                            info.image_shape)
    train_variables = distributed.replicate(train_variables, mesh)
  else:
    train_variables = variables
  steps_per_epoch = info.num_train // tc.batch_size
  if tc.steps_per_epoch > 0:
    steps_per_epoch = min(steps_per_epoch, tc.steps_per_epoch)
  total_steps = tc.num_epochs * steps_per_epoch
  schedule = learning_rate_schedule(tc, steps_per_epoch)
  filter_fn = masks_lib.kernel_filter(exclude=tuple(config.prune.exclude))
  manager = checkpoint_manager(workdir)
  writer = (tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))
            if jax.process_index() == 0 else None)

  if manager.latest_step() is None:
    _report("pruning with %s ...", config.prune.method)
    masks, meta = find_masks(config, model, variables, info.image_shape, prune_key, mesh)
    meta |= {"train_seconds": 0.0, "history": []}
    state = distributed.replicate(
        create_train_state(config, model, train_variables, masks, schedule), mesh)
    if jax.process_index() == 0:
      masks_lib.save_masks(os.path.join(workdir, "masks.npz"), masks)
  else:
    state, meta = _restore_latest(config, model, train_variables, schedule, workdir, manager,
                                  mesh)
    _report("Resumed from the checkpoint at step %d.", int(state.step))
  density = masks_lib.density_summary(state.masks, state.params, filter_fn)
  _report("pruned with %s in %s: %.2f%% of the prunable weights kept", config.prune.method,
          progress.format_duration(meta["prune_seconds"]), 100 * density["density/total"])
  _write_summaries(writer, 0, density)

  batches = data_lib.train_batches(
      config.dataset, batch_size=tc.batch_size, seed=config.seed, data_dir=config.data_dir,
      augment=config.augment, rows=distributed.process_rows(tc.batch_size, mesh),
  )
  first_step = int(state.step)
  batches = itertools.islice(batches, first_step, None)  # the data position of a resumed run
  history = meta["history"]
  meter = progress.Progress(first_step, total_steps, steps_per_epoch)
  start, metrics = time.perf_counter(), []
  for step in range(first_step + 1, total_steps + 1):
    state, m = train_step(state, distributed.shard_batch(next(batches), mesh))
    metrics.append(m)
    if step % tc.log_every_steps == 0:
      line, rate = meter.line(step, float(m["loss"]))
      _report("%s", line)
      _write_summaries(writer, step, {"train/loss": float(m["loss"]), "steps_per_second": rate,
                                      "learning_rate": float(schedule(step))})
    if step % steps_per_epoch == 0:
      epoch = step // steps_per_epoch
      test = epoch % tc.eval_every_epochs == 0 or epoch == tc.num_epochs
      history.append(_end_of_epoch(config, state, metrics, mesh, epoch, test))
      _write_summaries(writer, step, {k: v for k, v in history[-1].items() if k != "epoch"})
      metrics = []
    if step % tc.checkpoint_every_steps == 0 or step == total_steps:
      meta["train_seconds"] += time.perf_counter() - start
      start = time.perf_counter()
      save_checkpoint(manager, state, meta)
  manager.wait_until_finished()
  if writer is not None:
    writer.close()

  results = {
      "config": json.loads(config.to_json()),
      "final_test_top1": history[-1]["test_top1"],
      "best_test_top1": max(h["test_top1"] for h in history if "test_top1" in h),
      "final_test_top5": history[-1]["test_top5"] if info.num_classes > 10 else None,
      "density": density,
      "prune_seconds": meta["prune_seconds"],
      "train_seconds": meta["train_seconds"],
      "connectivity": meta["connectivity"],
      "history": history,
      "provenance": provenance.provenance(),
  }
  if jax.process_index() == 0:
    atomic_files.write_json(os.path.join(workdir, "results.json"), results)
  return results


def _end_of_epoch(
    config: ml_collections.ConfigDict,
    state: TrainState,
    metrics: list[dict[str, jax.Array]],
    mesh: Mesh,
    epoch: int,
    test: bool,
) -> dict[str, float]:
  """The epoch's mean train loss and accuracy and, if `test`, its test-split metrics; logs them."""
  record = {"epoch": epoch,
            "train_loss": float(np.mean([m["loss"] for m in metrics])),
            "train_accuracy": float(np.mean([m["accuracy"] for m in metrics]))}
  if not test:
    _report("epoch %d/%d done: train loss %.4f", epoch, config.train.num_epochs,
            record["train_loss"])
    return record
  rows = distributed.process_rows(config.train.eval_batch_size, mesh)
  result = evaluate(state, (distributed.shard_batch(b, mesh) for b in data_lib.eval_batches(
      config.dataset, batch_size=rows.stop - rows.start, data_dir=config.data_dir)))
  record |= {"test_loss": result["loss"], "test_top1": result["top1"],
             "test_top5": result["top5"]}
  _report("epoch %d/%d done: train loss %.4f, test top-1 %.2f%%", epoch,
          config.train.num_epochs, record["train_loss"], 100 * record["test_top1"])
  return record
