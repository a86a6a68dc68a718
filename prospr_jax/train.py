"""Prune at initialization, then train the masked network: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import itertools
import json
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
from absl import logging
from flax.metrics import tensorboard
from flax.training import train_state
from jax.sharding import Mesh

from prospr_jax import atomic_files
from prospr_jax import data as data_lib
from prospr_jax import masks as masks_lib
from prospr_jax import models, parallel, structured
from prospr_jax.adapters import LinenApply, LinenLoss, cross_entropy
from prospr_jax.saliency import registry
from prospr_jax.transform import keep_masked

PyTree = Any
DENSE = "dense"
"""`config.prune.method` value that trains the unpruned network."""


class TrainState(train_state.TrainState):
  """Params, optimizer state, BatchNorm statistics and the bool mask pytree."""

  batch_stats: PyTree
  masks: PyTree


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Cosine decay, or step decay x0.1 at `lr_decay_fractions` of training (the paper's)."""
  total = config.num_epochs * steps_per_epoch
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, total)
  if config.lr_schedule == "step":
    boundaries = {int(f * total): 0.1 for f in config.lr_decay_fractions}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}; choose 'cosine' or 'step'.")


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule, masks: PyTree
) -> optax.GradientTransformation:
  """keep_masked -> L2 weight decay -> SGD with momentum: pruned weights stay exactly zero."""
  return optax.chain(
      keep_masked(masks),
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum or None),
  )


@jax.jit
def train_step(state: TrainState, batch: PyTree) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on `batch`; returns the new state and `{'loss', 'accuracy'}` of the batch."""

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"],
    )
    return cross_entropy(logits, batch["label"]), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return state, {"loss": loss, "accuracy": accuracy}


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


def _method_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The method-specific keyword arguments of `prune` read from `config.prune`."""
  method = config.method
  if method in ("prospr", "prospr_first_order"):
    momentum = config.inner_momentum or None
    return {"num_steps": config.num_steps, "remat": config.remat,
            "optimizer": optax.sgd(config.inner_lr, momentum=momentum)}
  if method in ("iterative_snip", "force"):
    return {} if config.num_rounds is None else {"num_rounds": config.num_rounds}
  if method == "synflow":
    return {"num_rounds": config.synflow_rounds, "float64": config.synflow_float64}
  return {}


def _num_pruning_batches(config: ml_collections.ConfigDict) -> int:
  if config.method in ("prospr", "prospr_first_order"):
    return config.num_steps + 1
  return config.num_batches


def prune_at_init(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    variables: PyTree,
    input_shape: tuple[int, ...],
    key: jax.Array,
    mesh: Mesh,
) -> PyTree:
  """Bool masks for `variables['params']` from `config.prune` (all True for 'dense').

  With `config.prune.structured`, channel-group masks from `structured.structured_prune`
  (`sparsity` is then the fraction of channels removed, `min_kept_per_layer` the minimum
  kept per channel group, `exclude` is not used: the head is never pruned). Pruning batches
  are drawn from the training split (no augmentation) with their own seed.
  """
  pc = config.prune
  params = variables["params"]
  if pc.method == DENSE:
    return masks_lib.ones_masks(params, dtype=bool)
  if pc.method not in registry.METHODS:
    raise ValueError(
        f"Unknown pruning method {pc.method!r}; choose 'dense' or one of {sorted(registry.METHODS)}."
    )
  state = {k: v for k, v in variables.items() if k != "params"}
  needs = registry.METHODS[pc.method].needs
  batches = None
  if "batches" in needs:
    stream = data_lib.train_batches(
        config.dataset, batch_size=pc.batch_size, seed=config.seed + 1,
        data_dir=config.data_dir, augment=False,
    )
    batches = [parallel.shard_batch(b, mesh) for b in
               itertools.islice(stream, _num_pruning_batches(pc))]
  if pc.structured:  # coupled channel groups (see prospr_jax.structured)
    return structured.structured_prune(
        pc.method, model, variables, batches, pc.sparsity,
        example_input=jax.ShapeDtypeStruct((1, *input_shape), jnp.float32), key=key,
        min_kept_per_group=pc.min_kept_per_layer, allocation=pc.allocation,
        **_method_options(pc),
    )
  temperature = pc.grasp_temperature if pc.method == "grasp" else 1.0
  return registry.prune(
      pc.method, params, pc.sparsity,
      loss_fn=LinenLoss(model, temperature=temperature), batches=batches, state=state,
      apply_fn=LinenApply(model, state), input_shape=input_shape, key=key,
      filter_fn=masks_lib.kernel_filter(exclude=tuple(pc.exclude)),
      allocation=pc.allocation,
      min_kept_per_layer=pc.min_kept_per_layer, **_method_options(pc),
  )


def _claim_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config.json` to `workdir`, refusing a workdir that holds another run's config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != current:
      changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
      raise ValueError(
          f"{workdir} holds a run with a different config (differs in {changed}). Use another "
          "--workdir or delete that one."
      )
  atomic_files.write_json(path, current)


def create_train_state(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    variables: PyTree,
    masks: PyTree,
    schedule: optax.Schedule,
) -> TrainState:
  """A `TrainState` with masked initial params and the keep_masked optimizer."""
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
) -> tuple[TrainState, dict[str, Any]]:
  """The latest checkpointed state of the run in `workdir` and its metadata."""
  # The saved masks give the template its mask shapes (per-channel masks are not full-size).
  saved_masks = masks_lib.load_masks(os.path.join(workdir, "masks.npz"), variables["params"])
  template = create_train_state(config, model, variables, saved_masks, schedule)
  return restore_checkpoint(manager, template)


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, nn.Module, TrainState]:
  """The config, model and latest checkpointed train state of a run written to `workdir`."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  info = data_lib.get_dataset_info(config.dataset, config.data_dir)
  model = models.get_model(config.model, info.num_classes)
  variables = models.init_variables(model, jax.random.PRNGKey(0), info.image_shape)
  state, _ = _restore_latest(config, model, variables, optax.constant_schedule(0.0), workdir,
                             checkpoint_manager(workdir))
  return config, model, state


def _write_summaries(writer: tensorboard.SummaryWriter, step: int, values: dict[str, float]) -> None:
  for tag, value in values.items():
    writer.scalar(tag, value, step)
  writer.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Prunes a freshly initialized model, trains it masked and evaluates it every epoch.

  Data-parallel over all devices (batch sharded, state replicated). Writes to `workdir`:
  `config.json`; `masks.npz` (bool masks, see `masks.load_masks`); orbax checkpoints of the
  whole train state in `checkpoints/` every `config.train.checkpoint_every_steps` steps and at
  the end; TensorBoard summaries; `results.json` (config, final/best test accuracy, per-layer
  density, pruning and training seconds). A rerun with the same config resumes from the latest
  checkpoint (same final params as an uninterrupted run); a workdir holding another config is
  refused. Returns the results dict.
  """
  masks_lib.check_sparsity(config.prune.sparsity)
  parallel.initialize_distributed(config.distributed)
  _claim_workdir(config, workdir)
  mesh = parallel.data_mesh()
  tc = config.train
  for batch_size in (tc.batch_size, tc.eval_batch_size, config.prune.batch_size):
    parallel.check_batch_size(batch_size, mesh)
  info = data_lib.get_dataset_info(config.dataset, config.data_dir)
  model = models.get_model(config.model, info.num_classes)
  init_key, prune_key = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = models.init_variables(model, init_key, info.image_shape)
  variables = parallel.replicate(variables, mesh)
  steps_per_epoch = info.num_train // (tc.batch_size * jax.process_count())
  if tc.steps_per_epoch > 0:
    steps_per_epoch = min(steps_per_epoch, tc.steps_per_epoch)
  schedule = learning_rate_schedule(tc, steps_per_epoch)
  filter_fn = masks_lib.kernel_filter(exclude=tuple(config.prune.exclude))
  manager = checkpoint_manager(workdir)
  writer = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

  if manager.latest_step() is None:
    start = time.perf_counter()
    masks = jax.block_until_ready(
        prune_at_init(config, model, variables, info.image_shape, prune_key, mesh)
    )
    meta = {"prune_seconds": time.perf_counter() - start, "train_seconds": 0.0, "history": []}
    state = create_train_state(config, model, variables, masks, schedule)
    masks_lib.save_masks(os.path.join(workdir, "masks.npz"), masks)
  else:
    state, meta = _restore_latest(config, model, variables, schedule, workdir, manager)
    logging.info("Resumed from the checkpoint at step %d.", int(state.step))
  density = masks_lib.density_summary(state.masks, state.params, filter_fn)
  logging.info("Pruned with %s in %.1f s: %.4f of prunable weights kept.",
               config.prune.method, meta["prune_seconds"], density["density/total"])
  _write_summaries(writer, 0, density)

  batches = data_lib.train_batches(
      config.dataset, batch_size=tc.batch_size, seed=config.seed, data_dir=config.data_dir,
      augment=config.augment,
  )
  first_step = int(state.step)
  batches = itertools.islice(batches, first_step, None)  # the data position of a resumed run
  history = meta["history"]
  start, tick, metrics = time.perf_counter(), time.perf_counter(), []
  for step in range(first_step + 1, tc.num_epochs * steps_per_epoch + 1):
    state, m = train_step(state, parallel.shard_batch(next(batches), mesh))
    metrics.append(m)
    if step % tc.log_every_steps == 0:
      rate = len(metrics) / (time.perf_counter() - tick)
      logging.info("step %d loss %.4f (%.1f steps/s)", step, float(m["loss"]), rate)
      _write_summaries(writer, step, {"train/loss": float(m["loss"]), "steps_per_second": rate,
                                      "learning_rate": float(schedule(step))})
    if step % steps_per_epoch == 0:
      history.append(_end_of_epoch(config, state, metrics, mesh, step // steps_per_epoch))
      _write_summaries(writer, step, {k: v for k, v in history[-1].items() if k != "epoch"})
      tick, metrics = time.perf_counter(), []
    if step % tc.checkpoint_every_steps == 0 or step == tc.num_epochs * steps_per_epoch:
      meta["train_seconds"] += time.perf_counter() - start
      start = time.perf_counter()
      save_checkpoint(manager, state, meta)
  manager.wait_until_finished()
  writer.close()

  results = {
      "config": json.loads(config.to_json()),
      "final_test_top1": history[-1]["test_top1"],
      "best_test_top1": max(h["test_top1"] for h in history),
      "final_test_top5": history[-1]["test_top5"] if info.num_classes > 10 else None,
      "density": density,
      "prune_seconds": meta["prune_seconds"],
      "train_seconds": meta["train_seconds"],
      "history": history,
      "device": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
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
) -> dict[str, float]:
  """Evaluates on the test split; returns the epoch's train and test metrics and logs them."""
  test = evaluate(state, (parallel.shard_batch(b, mesh) for b in data_lib.eval_batches(
      config.dataset, batch_size=config.train.eval_batch_size, data_dir=config.data_dir)))
  record = {"epoch": epoch,
            "train_loss": float(np.mean([m["loss"] for m in metrics])),
            "train_accuracy": float(np.mean([m["accuracy"] for m in metrics])),
            "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"]}
  logging.info("epoch %d: train loss %.4f, test top-1 %.4f, top-5 %.4f", epoch,
               record["train_loss"], record["test_top1"], record["test_top5"])
  return record
