"""A tiny configuration for tests: a few steps of LeNet-300-100, mock or real data."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "lenet300100"
  config.prune.sparsity = 0.9
  config.prune.batch_size = 32
  config.prune.num_steps = 1
  config.train.num_epochs = 1
  config.train.batch_size = 32
  config.train.eval_batch_size = 256
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 10
  config.train.steps_per_epoch = 20
  return config
