"""A run's config checked once, up front, and the typed values its steps read (`plan_run`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import flax.linen as nn
import ml_collections
from jax.sharding import Mesh

from prospr_jax import models
from prospr_jax.experiment import config_checks, distributed, prune_config
from prospr_jax.experiment.data import DatasetInfo, device_data
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


TOP_LEVEL_FIELDS = ("seed", "distributed", "dataset", "data_dir", "augment", "model", "prune",
                    "train", "compile_cache_dir", "sweep_arm")
"""The fields of a run's config (its sections: `distributed`, `prune`, `train`;
`compile_cache_dir`: see `compile_cache`; `sweep_arm`: the arm a grid sweep's run belongs to,
see `grid_sweep.point_config`)."""
TRAIN_FIELDS = (
    "num_epochs", "batch_size", "eval_batch_size", "learning_rate", "lr_schedule",
    "lr_decay_fractions", "momentum", "weight_decay", "steps_per_epoch", "log_every_steps",
    "eval_every_epochs", "checkpoint_every_steps",
)
"""The fields of `config.train`."""
LR_SCHEDULES = ("cosine", "step")


def check_train_fields(tc: ml_collections.ConfigDict) -> None:
  """Raises ValueError or TypeError naming the first field of `config.train` of a wrong type or
  out of range, or an unknown one; the data set and devices are `check_batch_sizes`'s."""
  config_checks.check_known_fields("train", tc, TRAIN_FIELDS)
  for name in ("num_epochs", "batch_size", "eval_batch_size", "log_every_steps",
               "eval_every_epochs", "checkpoint_every_steps"):
    config_checks.check_int(f"train.{name}", tc[name], 1)
  config_checks.check_int("train.steps_per_epoch", tc.steps_per_epoch, 1, also=(-1,))
  config_checks.check_number("train.learning_rate", tc.learning_rate, 0.0)
  config_checks.check_number("train.momentum", tc.momentum, 0.0, 1.0)
  config_checks.check_number("train.weight_decay", tc.weight_decay, 0.0)
  config_checks.check_choice("train.lr_schedule", tc.lr_schedule, LR_SCHEDULES)
  for fraction in tc.lr_decay_fractions:
    config_checks.check_number("train.lr_decay_fractions", fraction, 0.0, 1.0)


def check_batch_sizes(config: ml_collections.ConfigDict, prune: prune_config.PrunePlan,
                      info: DatasetInfo, mesh: Mesh) -> None:
  """Raises ValueError unless every global batch size (training, evaluation, pruning if the
  method takes batches) divides evenly over the devices of `mesh`, and the training and pruning
  batches fit in the training split (`info.num_train` images)."""
  tc = config.train
  in_train_split = [("train.batch_size", tc.batch_size)]
  if prune.num_batches:
    in_train_split.append(("prune.batch_size", prune.batch_size))
  for name, batch_size in [*in_train_split, ("train.eval_batch_size", tc.eval_batch_size)]:
    try:
      distributed.check_batch_size(batch_size, mesh)
    except ValueError as e:
      raise ValueError(f"config.{name}: {e}") from None
  for name, batch_size in in_train_split:
    if batch_size > info.num_train:
      raise ValueError(f"config.{name}={batch_size} is larger than the training split of "
                       f"{info.name} ({info.num_train} images).")


def plan_run(config: ml_collections.ConfigDict, mesh: Mesh) -> RunPlan:
  """Checks `config` for a run on `mesh` and derives its `RunPlan`.

  Every field is checked (type, range, unknown names), then what the data set and the devices
  make of them, before anything is written.

  Raises:
    ValueError: an unknown field; a bad `config.prune` (`prune_config.plan`) or `config.train`
      (`check_train_fields`); a global batch size (training, evaluation, pruning) not divisible
      by the device count, or a training or pruning batch larger than the training split; an
      unknown data set or model.
    TypeError: a field of the wrong type.
    FileNotFoundError: the data set is not prepared in `config.data_dir`.
  """
  config_checks.check_known_fields("", config, TOP_LEVEL_FIELDS)
  config_checks.check_int("seed", config.seed, 0)
  prune = prune_config.plan(config.prune)
  tc = config.train
  check_train_fields(tc)
  info = device_data.dataset_info(config.dataset, config.data_dir)
  check_batch_sizes(config, prune, info, mesh)
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


def check_runs(configs: Iterable[tuple[str, ml_collections.ConfigDict]], mesh: Mesh) -> None:
  """Checks every `(label, config)` pair with `plan_run` before any of them runs (a sweep's
  grid points, say), so a bad field stops a sweep at once instead of failing each point.

  Raises:
    config_checks.ConfigError: the first config `plan_run` refuses, its label prefixed.
  """
  for label, config in configs:
    with config_checks.refusing_as_config_error(f"{label}: "):
      plan_run(config, mesh)
