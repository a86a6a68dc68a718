"""Structured (channel) sweep on Fashion-MNIST: the protocol of `sweep_fashion_mnist.py` with
coupled channel-group masks; sparsity = fraction of channels removed, at least one channel
kept per group."""

import ml_collections

from configs import sweep_fashion_mnist


def get_config() -> ml_collections.ConfigDict:
  config = sweep_fashion_mnist.get_config()
  config.prune.structured = True
  config.prune.min_kept_per_layer = 1  # per channel group
  return config
