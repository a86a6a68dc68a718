"""The convnet study: the paper's extreme sparsities, SmallConvNet on real Fashion-MNIST
(BatchNorm convnet, 61,050 params).

Protocol: SmallConvNet, 20 epochs of SGD at batch 128 (momentum 0.9, weight decay 5e-4, cosine
learning rate from 0.1), the training augmentation (random crops of the 2-pixel zero-padded
image), test accuracy on the full 10,000-image test split after the last epoch (evaluated every
5 epochs). Densities: the 0.8^k grid at k = 11, 13, 15, 17, 18 (8.6% to 1.8%, the paper's
range) plus 1% and 0.5%. Pruning from 128-example batches of the training split (their own
seed), each method at its authors' defaults (`configs/default.py`): ProsPr k = 3 inner SGD
steps at lr 0.1; SNIP and GraSP one batch (GraSP temperature 200); iterative SNIP and FORCE 60
rounds; SynFlow 100 rounds in float64; NTK-SAP 20 rounds of 5 re-draws; PX 100 rounds on one
batch. Layers may collapse (min_kept_per_layer = 0): a method that empties a layer is scored by
the accuracy that network reaches, and the collapse is reported.

Why 20 epochs: a 10-epoch pilot (results/fashion_mnist_convnet_pilot_10_epochs) gained 0.92
(dense), 0.65 (ProsPr at 8.6%) and 0.80 (SynFlow at 8.6%) points when trained twice as long,
against the 0.3-point convergence criterion; the sparsest arms had converged (SynFlow at 0.5%:
-0.06). The convergence arms (`dense+x2`, `CONVERGENCE_METHODS` at `CONVERGENCE_SPARSITIES`,
40 epochs) check 20 epochs on every seed where the pilot saw the largest gains.

Cost and what was cut: a 20-epoch run costs about 6.8 minutes in a population of 8 on the
project's 2-core VM (3.4 per 10 epochs, quiet). The core tier (`METHODS` at every density, the
dense and convergence arms, `SANITY_METHODS` at `SANITY_SPARSITIES`; 3 paired seeds) is 141
20-epoch run-equivalents, about 16 CPU hours against a 15-hour budget. Run after it, as later
sessions allow, is `EXTENSION_METHODS` (GraSP, NTK-SAP, PX, magnitude, iterative SNIP, first-order
ProsPr) and the sanity arms at `EXTENSION_SANITY_SPARSITIES`: every registered method at every
density would be about 35 CPU hours. The core arms are ProsPr's ancestor (SNIP), the two
strongest baselines of the LeNet study (SynFlow, FORCE) and random pruning at ERK layer
densities, the check that a method beats a good random mask; plain `random` (weaker than
`random+erk`) is not run.

Run with experiments/sweep.py (`--population_size`), from a worktree pinned at one commit; the
order and commands are in results/fashion_mnist_convnet_study/README.md.
"""

import ml_collections

from configs import default

DENSITIES = tuple(0.8**k for k in (11, 13, 15, 17, 18)) + (0.01, 0.005)
"""8.59%, 5.50%, 3.52%, 2.25%, 1.80%, 1% and 0.5% of the weights kept."""
SPARSITIES = tuple(round(1.0 - d, 4) for d in DENSITIES)
"""0.9141, 0.945, 0.9648, 0.9775, 0.982, 0.99, 0.995."""
METHODS = ("prospr", "snip", "synflow", "force", "random+erk", "dense+x2")
"""The core sweep arms (`prospr_jax.experiment.grid_sweep.parse_arm`); dense is added per seed."""
EXTENSION_METHODS = ("grasp", "ntk_sap", "px", "magnitude", "iterative_snip",
                     "prospr_first_order")
"""The other registered methods, run after the core tier at the same densities and seeds."""
CONVERGENCE_METHODS = ("prospr+x2", "synflow+x2")
"""Trained twice as long: within 0.3 point of 20 epochs, or the protocol trains longer."""
CONVERGENCE_SPARSITIES = (0.9141,)
"""Where the pilot's sparse arms gained most from twice the training."""
SANITY_METHODS = ("prospr+shuffle", "prospr+reinit", "prospr+invert", "synflow+shuffle",
                  "synflow+reinit")
"""Frankle et al. (2021)'s checks for ProsPr and the strongest baseline of the LeNet study
(SynFlow; `+invert` needs a one-shot ranking, which SynFlow's rounds are not)."""
SANITY_SPARSITIES = (0.945,)
EXTENSION_SANITY_SPARSITIES = (0.982, 0.99)
SEEDS = (0, 1, 2)


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "small_convnet"
  config.prune.min_kept_per_layer = 0
  config.prune.num_rounds = 60  # iterative SNIP and FORCE
  config.train.num_epochs = 20
  config.train.eval_every_epochs = 5
  config.train.log_every_steps = 1000
  config.train.checkpoint_every_steps = 2000
  return config
