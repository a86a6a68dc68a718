"""The convnet study: every method at the paper's extreme sparsities, SmallConvNet on real
Fashion-MNIST (BatchNorm convnet, 61,050 params).

Protocol: SmallConvNet, 10 epochs of SGD at batch 128 (momentum 0.9, weight decay 5e-4, cosine
learning rate from 0.1), the training augmentation (random crops of the 2-pixel zero-padded
image), test accuracy on the full 10,000-image test split after the last epoch (evaluated every
5 epochs). Densities: the 0.8^k grid at k = 11, 13, 15, 17, 18 (8.6% to 1.8%, the paper's
range) plus 1% and 0.5%. Pruning from 128-example batches of the training split (their own
seed), each method at its authors' defaults (`configs/default.py`): ProsPr k = 3 inner SGD
steps at lr 0.1; SNIP and GraSP one batch (GraSP temperature 200); iterative SNIP and FORCE 60
rounds; SynFlow 100 rounds in float64; NTK-SAP 20 rounds of 5 re-draws; PX 100 rounds on one
batch. Layers may collapse (min_kept_per_layer = 0): a method that empties a layer is scored by
the accuracy that network reaches, and the collapse is reported.

Arms (`METHODS`): every registered method but plain `random` (random pruning is represented by
`random+erk`, the stronger random baseline), the dense network and the dense network trained
twice as long (`dense+x2`, the convergence check; `prospr+x2` and `synflow+x2` at the sparsest
density check the sparse networks' convergence). Sanity arms (`SANITY_METHODS`) at
`SANITY_SPARSITIES`. 3 paired seeds: 288 runs (231 pruned, 6 dense, 6 sparse convergence,
45 sanity), about 297 ten-epoch run-equivalents. At ~3.4 minutes each with population training
on the project's 2-core VM that is ~17 CPU hours, 10% over the 15-hour budget; plain `random`
and the grid densities k = 12, 14, 16 were cut to get there.

Run with experiments/sweep.py (`--population_size`), from a worktree pinned at one commit.
"""

import ml_collections

from configs import default

DENSITIES = tuple(0.8**k for k in (11, 13, 15, 17, 18)) + (0.01, 0.005)
"""8.59%, 5.50%, 3.52%, 2.25%, 1.80%, 1% and 0.5% of the weights kept."""
SPARSITIES = tuple(round(1.0 - d, 4) for d in DENSITIES)
"""0.9141, 0.945, 0.9648, 0.9775, 0.982, 0.99, 0.995."""
METHODS = (
    "prospr", "prospr_first_order", "snip", "grasp", "synflow", "iterative_snip", "force",
    "magnitude", "ntk_sap", "px", "random+erk", "dense+x2",
)
"""The sweep arms (`prospr_jax.experiment.grid_sweep.parse_arm`); dense is added per seed."""
CONVERGENCE_METHODS = ("prospr+x2", "synflow+x2")
"""Trained twice as long at the sparsest density: within 0.3 point of 10 epochs, or train longer."""
SANITY_METHODS = ("prospr+shuffle", "prospr+reinit", "prospr+invert", "synflow+shuffle",
                  "synflow+reinit")
"""Frankle et al. (2021)'s checks for ProsPr and the strongest baseline of the LeNet study
(SynFlow; `+invert` needs a one-shot ranking, which SynFlow's rounds are not)."""
SANITY_SPARSITIES = (0.945, 0.982, 0.99)


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "small_convnet"
  config.prune.min_kept_per_layer = 0
  config.prune.num_rounds = 60  # iterative SNIP and FORCE
  config.train.num_epochs = 10
  config.train.eval_every_epochs = 5
  config.train.log_every_steps = 1000
  config.train.checkpoint_every_steps = 2000
  return config
