"""Structured ProsPr on Fashion-MNIST: coupled channel groups of SmallConvNet, 50% of channels removed.

`config.prune.structured = True` makes `prune_at_init` call `prospr_jax.structured.structured_prune`:
`sparsity` is the fraction of channels removed (global top-k over all channel groups, at least
one channel kept per group), and the trained masked network can be compacted into a smaller
dense one with `prospr_jax.models.zoo_compaction.compact`. CPU-sized (minutes), like `default.py`.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "small_convnet"
  config.prune.method = "prospr"
  config.prune.structured = True
  config.prune.sparsity = 0.5
  config.prune.min_kept_per_layer = 1  # per channel group
  return config
