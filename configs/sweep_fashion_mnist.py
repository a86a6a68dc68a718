"""The CPU-sized reproduction: every method x sparsity on real Fashion-MNIST, small BN ConvNet.

Protocol: SmallConvNet (VGG-style, BatchNorm), 300 steps of SGD at batch 128 (38,400 examples,
0.64 epoch; momentum 0.9, weight decay 5e-4, cosine learning rate from 0.1), standard
padding-crop augmentation, test accuracy on the full 10,000-image test split; pruning
from 128-example batches of the training split; ProsPr k = 3 inner SGD steps at lr 0.1;
iterative SNIP and FORCE 20 rounds; SynFlow 100 rounds in float64. Layers may collapse
(min_kept_per_layer = 0): a method that empties a layer is scored by the accuracy that
network reaches, as it would be in practice. Run with experiments/sweep.py.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "small_convnet"
  config.prune.min_kept_per_layer = 0
  config.prune.num_rounds = 20  # iterative SNIP and FORCE
  config.train.num_epochs = 1
  config.train.steps_per_epoch = 300
  config.train.checkpoint_every_steps = 10_000
  return config
