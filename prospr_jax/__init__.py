"""prospr-jax: pruning neural networks at initialization (ProsPr and baselines) in JAX."""

from prospr_jax.masks import (
    LayerCollapseError,
    apply_masks,
    check_masks,
    default_filter,
    density_summary,
    kernel_filter,
    load_masks,
    masks_from_scores,
    ones_masks,
    save_masks,
)
from prospr_jax.saliency import (
    METHODS,
    MethodSpec,
    grasp_scores,
    k_step_loss,
    magnitude_scores,
    meta_gradient,
    prospr_scores,
    prune,
    random_scores,
    register,
    registered,
    snip_scores,
)
from prospr_jax.structured import structured_prune
from prospr_jax.transform import keep_masked

# Declares the built-in methods in METHODS (it imports the criteria and the channel scorers).
from prospr_jax import builtin_methods  # pylint: disable=g-bad-import-order

__version__ = "0.1.0"
