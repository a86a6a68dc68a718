"""Registering a channel rule for a primitive the tracer does not know, end to end."""

from __future__ import annotations

from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.interpreters import batching, mlir

from prospr_jax import masks as masks_lib
from prospr_jax import structured
from prospr_jax.structured import rule_registry

X = jax.random.normal(jax.random.key(0), (3, 6, 6, 4))
SLOPES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


# A leaky ReLU with one fixed slope per channel (the last axis), held as a primitive parameter:
# a custom layer whose compaction must also shrink that parameter.
channel_leaky_relu_p = jex.core.Primitive("channel_leaky_relu")


def _channel_leaky_relu(x: jax.Array, *, slopes: tuple[float, ...]) -> jax.Array:
  return jnp.where(x > 0, x, x * jnp.asarray(slopes, x.dtype))


def _batch_channel_leaky_relu(args, dims, *, slopes):
  (x,), (d,) = args, dims
  return channel_leaky_relu_p.bind(jnp.moveaxis(x, d, 0), slopes=slopes), 0


channel_leaky_relu_p.def_impl(_channel_leaky_relu)
channel_leaky_relu_p.def_abstract_eval(lambda x, *, slopes: x)
mlir.register_lowering(channel_leaky_relu_p,
                       mlir.lower_fun(_channel_leaky_relu, multiple_results=False))
batching.primitive_batchers[channel_leaky_relu_p] = _batch_channel_leaky_relu


def _kept_slopes(eqn: jex.core.JaxprEqn, ins: list[Any], kept_in: list[Any],
                 kept_out: list[Any]) -> tuple[float, ...]:
  """The slopes of the remaining channels (`kept_in[0][-1]`: those of the input's last axis)."""
  kept = kept_in[0][-1]
  slopes = eqn.params["slopes"]
  return slopes if kept is None else tuple(np.asarray(slopes)[kept].tolist())


LEAKY_RULE = structured.PrimitiveRule(
    propagate=structured.elementwise_propagate(all),  # it maps 0 to 0
    rewrite=structured.rewrite_params(slopes=_kept_slopes))


def _conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _model():
  keys = jax.random.split(jax.random.key(1), 4)
  shapes = {"k1": (3, 3, 4, 6), "b1": (6,), "k2": (3, 3, 6, 8), "w": (8, 2)}
  params = {name: jax.random.normal(k, shape) / np.sqrt(max(np.prod(shape[:-1]), 1))
            for k, (name, shape) in zip(keys, shapes.items())}

  def apply_fn(p, x):
    h = channel_leaky_relu_p.bind(_conv(x, p["k1"]) + p["b1"], slopes=SLOPES)
    return jax.nn.relu(_conv(h, p["k2"])).mean(axis=(1, 2)) @ p["w"]

  return apply_fn, params


def _prune(apply_fn, params):
  return structured.structured_prune("random", apply_fn, params, None, 0.5, example_input=X,
                                     key=jax.random.key(3), min_kept_per_group=1)


def test_an_unknown_primitive_points_to_register_primitive_rule():
  apply_fn, params = _model()
  with pytest.raises(structured.UnsupportedPrimitiveError,
                     match="'channel_leaky_relu'.*register_primitive_rule"):
    structured.trace_model(apply_fn, params, X)


def test_a_registered_primitive_is_traced_and_compacted_with_its_parameter():
  apply_fn, params = _model()
  with structured.register_primitive_rule(channel_leaky_relu_p, LEAKY_RULE):
    groups = {g.name: g for g in structured.trace_model(apply_fn, params, X).groups}
    masks = _prune(apply_fn, params)
    small = structured.compact(apply_fn, params, masks, X)
  # The activation passes k1's channels through to k2, as a built-in one would.
  assert {name: {(s.path, s.axis) for s in g.members + g.consumers}
          for name, g in groups.items()} == {"k1": {("k1", 3), ("b1", 0), ("k2", 2)},
                                             "k2": {("k2", 3), ("w", 0)}}
  kept = np.asarray(masks["b1"])
  assert 0 < kept.sum() < len(SLOPES)  # the seed prunes some of k1's channels
  # The compacted program keeps working once the registration is undone (it holds its rules).
  np.testing.assert_allclose(small(X), apply_fn(masks_lib.apply_masks(params, masks), X),
                             rtol=1e-5, atol=1e-5)
  assert small.report.params_after < small.report.params_before
  assert small.report.macs_after < small.report.macs_before
  (eqn,) = [e for e in jax.make_jaxpr(small.apply)(small.params, small.state, X).jaxpr.eqns
            if e.primitive is channel_leaky_relu_p]
  np.testing.assert_allclose(eqn.params["slopes"], np.asarray(SLOPES)[kept])
  with pytest.raises(structured.UnsupportedPrimitiveError):
    structured.trace_model(apply_fn, params, X)  # the registration did not leak


def test_registration_is_undone_in_order_and_refuses_bad_input():
  registration = structured.register_primitive_rule("channel_leaky_relu", LEAKY_RULE)
  assert rule_registry.rule_for("channel_leaky_relu") is LEAKY_RULE
  assert "channel_leaky_relu" in structured.supported_primitives()
  registration.undo()
  assert rule_registry.rule_for("channel_leaky_relu") is None
  with pytest.raises(RuntimeError, match="undone already"):
    registration.undo()

  builtin = rule_registry.rule_for("add")
  with pytest.raises(ValueError, match="override=True"):
    structured.register_primitive_rule("add", LEAKY_RULE)
  with structured.register_primitive_rule(lax.add_p, LEAKY_RULE, override=True):
    assert rule_registry.rule_for("add") is LEAKY_RULE
  assert rule_registry.rule_for("add") is builtin

  with pytest.raises(ValueError, match="call-like"):
    structured.register_primitive_rule("pjit", LEAKY_RULE)
  with pytest.raises(TypeError, match="PrimitiveRule"):
    structured.register_primitive_rule(channel_leaky_relu_p, LEAKY_RULE.propagate)
  with pytest.raises(TypeError, match="primitive or its name"):
    structured.register_primitive_rule(None, LEAKY_RULE)
