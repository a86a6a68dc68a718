"""Saliency criteria for pruning at initialization, each a pure function of params and data."""

from prospr_jax.saliency.grasp import grasp_scores, hessian_vector_product
from prospr_jax.saliency.objective import with_state
from prospr_jax.saliency.prospr import (
    DEFAULT_INNER_OPTIMIZER,
    k_step_loss,
    meta_gradient,
    prospr_scores,
)
from prospr_jax.saliency.registry import (
    METHODS,
    ChannelScorer,
    FromConfig,
    MethodSpec,
    PruneInputs,
    from_config,
    prune,
    register,
    registered,
    unregister,
)
from prospr_jax.saliency.simple import magnitude_scores, random_scores
from prospr_jax.saliency.snip import (
    connection_sensitivity,
    force_masks,
    iterative_snip_masks,
    kept_fraction_schedule,
    snip_scores,
)
from prospr_jax.saliency.synflow import synflow_masks, synflow_scores
