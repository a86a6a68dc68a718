"""A run's config checked once, up front, and the typed values its steps read (`plan_run`)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import ml_collections
from jax.sharding import Mesh

from prospr_jax import models
from prospr_jax.experiment.data import DatasetInfo, device_data
from prospr_jax.experiment import distributed, prune_config
from prospr_jax.experiment.train_step import TrainHyperparams


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """Where a run's images come from.

  Attributes:
    info: the data set's classes, image shape and split sizes.
    data_dir: the TFDS data directory (None: TFDS's default).
    augment: whether training batches are augmented.
  """

  info: DatasetInfo
  data_dir: str | None
  augment: bool


@dataclasses.dataclass(frozen=True)
class TrainPlan:
  """The training loop's schedule, in steps of one global batch.

  Attributes:
    hyperparams: `config.train`, for the learning-rate schedule and the optimizer.
    batch_size: global training batch size.
    eval_batch_size: global evaluation batch size.
    steps_per_epoch: steps per epoch (a full pass, or `config.train.steps_per_epoch` if fewer).
    num_epochs: epochs to train.
    log_every_steps: interval of the progress line and the loss summary.
    eval_every_epochs: interval of the test-split evaluation (the last epoch is always tested).
    checkpoint_every_steps: interval of the checkpoints (the last step is always saved).
  """

  hyperparams: TrainHyperparams
  batch_size: int
  eval_batch_size: int
  steps_per_epoch: int
  num_epochs: int
  log_every_steps: int
  eval_every_epochs: int
  checkpoint_every_steps: int

  @property
  def total_steps(self) -> int:
    return self.num_epochs * self.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """Everything `train_and_evaluate` reads from its config, checked (see `plan_run`).

  Attributes:
    seed: seed of the initialization, of the training data order and (plus one) of the
      pruning batches.
    data: the data set (`DataPlan`).
    model: the model `config.model` names, with the data set's number of classes.
    prune: `config.prune`, checked (`prune_config.PrunePlan`).
    train: the training loop (`TrainPlan`).
  """

  seed: int
  data: DataPlan
  model: nn.Module
  prune: prune_config.PrunePlan
  train: TrainPlan


def plan_run(config: ml_collections.ConfigDict, mesh: Mesh) -> RunPlan:
  """Checks `config` for a run on `mesh` and derives its `RunPlan`.

  Raises:
    ValueError: a bad `config.prune` (`prune_config.plan`), a global batch size (training,
      evaluation, pruning) not divisible by the device count, an unknown data set or model.
    FileNotFoundError: the data set is not prepared in `config.data_dir`.
  """
  prune = prune_config.plan(config.prune)
  tc = config.train
  batch_sizes = [tc.batch_size, tc.eval_batch_size]
  if prune.num_batches:
    batch_sizes.append(prune.batch_size)
  for batch_size in batch_sizes:
    distributed.check_batch_size(batch_size, mesh)
  info = device_data.dataset_info(config.dataset, config.data_dir)
  steps_per_epoch = info.num_train // tc.batch_size
  if tc.steps_per_epoch > 0:
    steps_per_epoch = min(steps_per_epoch, tc.steps_per_epoch)
  return RunPlan(
      seed=config.seed,
      data=DataPlan(info, config.data_dir, config.augment),
      model=models.get_model(config.model, info.num_classes),
      prune=prune,
      train=TrainPlan(
          hyperparams=tc, batch_size=tc.batch_size, eval_batch_size=tc.eval_batch_size,
          steps_per_epoch=steps_per_epoch, num_epochs=tc.num_epochs,
          log_every_steps=tc.log_every_steps, eval_every_epochs=tc.eval_every_epochs,
          checkpoint_every_steps=tc.checkpoint_every_steps,
      ),
  )
