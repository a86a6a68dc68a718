"""Structured (channel) pruning and compaction of any JAX model, from its traced program.

    masks = structured_prune("prospr", model, variables, batches, sparsity=0.5)
    small = compact(model, variables, masks, example_input)

One job per module:

* `tracing`: `jax.make_jaxpr` of the model in eval mode, channel atoms propagated through its
  primitives (which positions of which arrays must be pruned together);
* `groups`: channel groups from the trace (members gated by one mask, consumers, state);
* `models`: linen, NNX and plain-function models as pure `apply` / `loss` functions;
* `scoring`: one score per channel for ProsPr (full, first order), SNIP, magnitude, random;
* `masks`: global top-k of channels, and the params mask pytree they give;
* `prune`: the entry points `structured_prune`, `group_scores`, `trace_model`;
* `compaction`: the smaller program (and NNX module) with the masked model's outputs.
"""

from prospr_jax.saliency.registry import structured_methods
from prospr_jax.structured.compaction import (
    CompactionReport,
    CompactModel,
    compact,
    count_macs,
    count_params,
)
from prospr_jax.structured.groups import ChannelGroup, Slot, channel_groups, num_channels
from prospr_jax.structured.channel_masks import channels_from_masks, expand_masks, select_channels
from prospr_jax.structured.prune import TracedModel, group_scores, structured_prune, trace_model
from prospr_jax.structured.scoring import gate_tree
from prospr_jax.structured.tracing import (
    SUPPORTED_PRIMITIVES,
    UnsupportedPrimitiveError,
    trace_channels,
)

__all__ = [
    "SUPPORTED_PRIMITIVES",
    "ChannelGroup",
    "CompactModel",
    "CompactionReport",
    "Slot",
    "TracedModel",
    "UnsupportedPrimitiveError",
    "channel_groups",
    "channels_from_masks",
    "compact",
    "count_macs",
    "count_params",
    "expand_masks",
    "gate_tree",
    "group_scores",
    "num_channels",
    "select_channels",
    "structured_methods",
    "structured_prune",
    "trace_channels",
    "trace_model",
]
