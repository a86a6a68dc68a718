"""Structured (channel) pruning and compaction of any JAX model, from its traced program.

    masks = structured_prune("prospr", model, variables, batches, sparsity=0.5)
    small = compact(model, variables, masks, example_input)

One job per module:

* `tracing`: the entry point `trace_channels`: `jax.make_jaxpr` of the model in eval mode,
  channel atoms propagated through its primitives (which positions of which arrays must be
  pruned together); `tracer` walks the jaxpr, `trace_types` holds what it records, `atoms`
  the union-find, `trace_errors` the errors at the user's line, `nested` the call primitives
  it enters;
* `primitive_rule`: a primitive's rule, channel propagation paired with its compaction
  rewrite; `rule_registry`: the one table of rules (`register_primitive_rule`); the built-in
  rules by family: `rules_elementwise`, `rules_contraction`, `rules_shape`, `rules_slicing`,
  `rules_reduction`;
* `groups`: channel groups from the trace (members gated by one mask, consumers, state);
* `pure_models`: linen, NNX and plain-function models as pure `apply` / `loss` functions;
* `scoring`: one score per channel for ProsPr (full, first order), SNIP, magnitude, random;
* `channel_masks`: global top-k of channels, and the params mask pytree they give;
* `prune`: the entry points `structured_prune`, `group_scores`, `trace_model`;
* `compaction`: the smaller program (and NNX module) with the masked model's outputs;
  `cost`: params and multiply-accumulates.
"""

from prospr_jax.saliency.registry import structured_methods
from prospr_jax.structured.channel_masks import channels_from_masks, expand_masks, select_channels
from prospr_jax.structured.compaction import (
    CompactModel,
    SlicedVariables,
    compact,
    slice_variables,
)
from prospr_jax.structured.cost import CompactionReport, count_macs, count_params
from prospr_jax.structured.groups import ChannelGroup, Slot, channel_groups, num_channels
from prospr_jax.structured.primitive_rule import PrimitiveRule, rebind, rewrite_params
from prospr_jax.structured.prune import TracedModel, group_scores, structured_prune, trace_model
from prospr_jax.structured.rule_registry import (
    RuleRegistration,
    register_primitive_rule,
    supported_primitives,
)
from prospr_jax.structured.rules_elementwise import elementwise_propagate
from prospr_jax.structured.scoring import gate_tree
from prospr_jax.structured.trace_errors import UnsupportedPrimitiveError
from prospr_jax.structured.trace_types import CONSUMER, MEMBER, TracedValue
from prospr_jax.structured.tracer import ChannelTracer
from prospr_jax.structured.tracing import trace_channels

__all__ = [
    "CONSUMER",
    "MEMBER",
    "ChannelGroup",
    "ChannelTracer",
    "CompactModel",
    "CompactionReport",
    "PrimitiveRule",
    "RuleRegistration",
    "SlicedVariables",
    "Slot",
    "TracedModel",
    "TracedValue",
    "UnsupportedPrimitiveError",
    "channel_groups",
    "channels_from_masks",
    "compact",
    "count_macs",
    "count_params",
    "elementwise_propagate",
    "expand_masks",
    "gate_tree",
    "group_scores",
    "num_channels",
    "rebind",
    "register_primitive_rule",
    "rewrite_params",
    "select_channels",
    "slice_variables",
    "structured_methods",
    "structured_prune",
    "supported_primitives",
    "trace_channels",
    "trace_model",
]
