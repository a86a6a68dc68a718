"""ProsPr paper setting: ResNet-20 on CIFAR-10 (200 epochs, batch 256, LR 0.1 x0.1 at 50%/75%).

The network is the authors' (`resnet20_prospr`: option-A shortcuts, 269,722 parameters, their
init); the paper configs all build the authors' networks (`prospr_jax.models`).

Needs CIFAR-10 prepared for tfds in `config.data_dir` (`tfds build cifar10` on a machine with
internet). Override the method and sparsity on the command line, e.g.
`--config.prune.method=snip --config.prune.sparsity=0.982`.
"""

import ml_collections

from configs import default


def get_config(
    model: str = "resnet20_prospr", dataset: str = "cifar10"
) -> ml_collections.ConfigDict:
  """The paper's CIFAR protocol for `model` on `dataset` (shared by the other paper configs)."""
  config = default.get_config()
  config.dataset = dataset
  config.model = model
  config.prune.sparsity = 0.982
  config.train.num_epochs = 200
  config.train.batch_size = 256
  config.train.eval_batch_size = 1000
  config.train.learning_rate = 0.1
  config.train.lr_schedule = "step"
  config.train.lr_decay_fractions = (0.5, 0.75)
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.train.checkpoint_every_steps = 2000
  return config
