"""Channel tracing: which positions of which arrays of a JAX program must be pruned together.

`trace_channels(apply, params, state, x)` traces `apply(params, state, x)` (eval mode) to a jaxpr
and walks its equations (`tracer.ChannelTracer`), nested `jit` / `custom_jvp_call` /
`custom_vjp_call` / `remat` bodies included. Every position of every axis of every leaf
(params, state, jaxpr constants) and of the input is an *atom*; a union-find joins the atoms
that must be removed together:

* every value gets per-axis *labels*: for each position along the axis, the atom it carries, or
  `None` for an axis whose positions are no channels (the spatial axes after a convolution or a
  pooling window). A leaf's axes are labelled with its own atoms, the input's with atoms that are
  *pinned* (never pruned, like every axis of the model's outputs);
* each primitive's rule (`rule_registry`) says how its equation moves, joins and pins labels:
  elementwise ops join their operands position by position (`rules_elementwise`); contractions
  join their contracted axes and give their output the free axes' labels (`rules_contraction`);
  reshapes, transposes, broadcasts, slices, concatenations and pads move labels
  (`rules_shape`, `rules_slicing`); reductions, pooling windows and cumulative ops pin the axes
  they mix (`rules_reduction`).

Alongside, every input-independent value (one computed from leaves only, e.g. a BatchNorm's
`scale * rsqrt(var + eps)`) remembers which leaf axes it came from, so that when it meets the
input-dependent activations each leaf axis gets a *role*: `member` (combined elementwise with
the channels, or a contraction's free axis: the kernel's output axis) or `consumer` (a
contracted axis: the next layer's input axis). A contraction is only followed where a removed
position contributes exactly 0 in the masked model (one side is masked params, or the
activation is zero there); otherwise its positions are pinned. Primitives without a rule raise
`UnsupportedPrimitiveError` with the user's source line; `register_primitive_rule` adds rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from prospr_jax.structured.rule_registry import current_rules
from prospr_jax.structured.trace_types import ChannelTrace
from prospr_jax.structured.tracer import ChannelTracer
from prospr_jax.tree_types import PyTree


def trace_channels(
    apply: Callable[[PyTree, PyTree, Any], Any], params: PyTree, state: PyTree, x: Any
) -> ChannelTrace:
  """Traces `apply(params, state, x)` and propagates channel atoms through it.

  Args:
    apply: the model in eval mode, a pure function of params, state and input.
    params: the trainable leaves (their axes may become group members and consumers).
    state: other leaves (e.g. BatchNorm statistics), sliced with the groups but never gated.
    x: an example input (array, pytree of arrays or `jax.ShapeDtypeStruct`s); its batch size is
      irrelevant.

  Returns:
    The trace; `groups.channel_groups` turns it into channel groups.

  Raises:
    UnsupportedPrimitiveError: at a primitive the tracer cannot follow.
  """
  closed, out_shape = jax.make_jaxpr(apply, return_shape=True)(params, state, x)
  rules = current_rules()
  tracer = ChannelTracer(rules)
  args = []
  treedefs = []
  for kind, tree in (("param", params), ("state", state)):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    treedefs.append(treedef)
    args += [tracer.leaf_value(jax.tree_util.keystr(p, simple=True, separator="/"), kind,
                               np.shape(leaf)) for p, leaf in leaves]
  x_leaves, x_treedef = jax.tree.flatten(x)
  args += [tracer.input_value(np.shape(leaf)) for leaf in x_leaves]
  num_params = len(jax.tree.leaves(params))
  outs = tracer.run(closed.jaxpr, closed.consts, args, ())
  for out in outs:
    for labels in out.labels:
      tracer.pin(labels)
  return ChannelTrace(
      jaxpr=closed, leaves=tuple(tracer.leaves), num_params=num_params, labels=tracer.labels,
      consts=tracer.consts, roles=tracer.roles, roots=tracer.atoms.roots(),
      pinned=tracer.atoms.pinned_roots(),
      treedefs=(*treedefs, x_treedef, jax.tree.structure(out_shape)), rules=rules,
  )
