"""ResNet-50 on ImageNet (imagenet2012 prepared for tfds; manual download), 90 epochs, batch
256 per process, LR 0.1 decayed x0.1 at 1/3 and 2/3, weight decay 1e-4."""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_resnet20.get_config(model="resnet50", dataset="imagenet2012")
  config.prune.sparsity = 0.9
  config.train.num_epochs = 90
  config.train.lr_decay_fractions = (1 / 3, 2 / 3)
  config.train.weight_decay = 1e-4
  config.train.eval_batch_size = 500
  return config
