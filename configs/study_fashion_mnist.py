"""The convergent study: every method at the 0.8^k densities on real Fashion-MNIST, LeNet-300-100.

Protocol (see docs/results.md, "The convergent study"): LeNet-300-100 (266,200 prunable
weights), 20 epochs of SGD at batch 128 (momentum 0.9, weight decay 5e-4, cosine learning rate
from 0.1), no augmentation, test accuracy on the full 10,000-image test split after the last
epoch (evaluated every 5 epochs). The dense network trained twice as long (`dense+x2`) shows
whether 20 epochs is converged. Pruning from 128-example batches of the training split (their
own seed): ProsPr k = 3 inner SGD steps at lr 0.1; SNIP and GraSP one batch (GraSP temperature
200); iterative SNIP and FORCE 60 rounds (naver/force's CIFAR command); SynFlow 100 rounds in
float64. Every layer may collapse (min_kept_per_layer = 0): a method that empties a layer is
scored by the accuracy that network reaches, and the collapse is reported.

Run with experiments/sweep.py; the exact commands are in docs/results.md.
"""

import ml_collections

from configs import default

DENSITIES = tuple(0.8**k for k in (10, 13, 16, 18, 20))
"""10.7%, 5.5%, 2.8%, 1.8%, 1.15% of the weights kept (Frankle et al. 2021's 0.8^k grid)."""
SPARSITIES = tuple(round(1.0 - d, 4) for d in DENSITIES)
"""0.8926, 0.945, 0.9719, 0.982, 0.9885."""
METHODS = (
    "prospr", "prospr_first_order", "snip", "grasp", "synflow", "iterative_snip", "force",
    "magnitude", "random+erk", "dense+x2",
)
"""The sweep arms (`prospr_jax.experiment.grid_sweep.parse_arm`); the dense baseline is added per seed."""


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "lenet300100"
  config.augment = False
  config.prune.min_kept_per_layer = 0
  config.prune.num_rounds = 60  # iterative SNIP and FORCE
  config.train.num_epochs = 20
  config.train.eval_every_epochs = 5
  config.train.log_every_steps = 1000
  config.train.checkpoint_every_steps = 10**9  # one checkpoint, after the last step
  return config
