"""Structured ProsPr on CIFAR-10 with VGG-16: channel groups, 50% of channels removed.

The CIFAR protocol of `cifar10_resnet20.py` (200 epochs, batch 256, LR 0.1 x0.1 at 50%/75%)
with `config.prune.structured = True`: `sparsity` is the fraction of conv channels removed
(global top-k over the VGG's 13 channel groups, at least one channel kept per group). The
network is the zoo's `vgg16` (bias-free convs, five pools); `--config.model=vgg16_prospr`
prunes the authors' network instead (each conv bias is gated with its channels). Needs
CIFAR-10 prepared for tfds in `config.data_dir`.
"""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_resnet20.get_config(model="vgg16", dataset="cifar10")
  config.prune.method = "prospr"
  config.prune.structured = True
  config.prune.sparsity = 0.5
  config.prune.min_kept_per_layer = 1  # per channel group
  return config
