"""The channel tracer on small plain-JAX programs: one behaviour per test, hand-derived groups."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from prospr_jax import masks as masks_lib
from prospr_jax import structured

X = jax.random.normal(jax.random.key(0), (3, 6, 6, 4))


def _conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _params(**shapes):
  keys = jax.random.split(jax.random.key(1), len(shapes))
  return {name: jax.random.normal(k, shape) / np.sqrt(max(np.prod(shape[:-1]), 1))
          + (0.3 if len(shape) == 1 else 0.0)
          for k, (name, shape) in zip(keys, shapes.items())}


def _groups(apply_fn, params, x=X):
  return {g.name: g for g in structured.trace_model(apply_fn, params, x).groups}


def _summary(groups):
  return {name: ({(s.path, s.axis) for s in g.members}, {(s.path, s.axis) for s in g.consumers})
          for name, g in groups.items()}


def _check_compaction(apply_fn, params, x=X, sparsity=0.5, seed=0):
  """Random channel masks at `sparsity`; the compacted program equals the masked one."""
  masks = structured.structured_prune("random", apply_fn, params, None, sparsity,
                                      example_input=x, key=jax.random.key(seed),
                                      min_kept_per_group=1)
  small = structured.compact(apply_fn, params, masks, x)
  np.testing.assert_allclose(small(x), apply_fn(masks_lib.apply_masks(params, masks), x),
                             rtol=1e-5, atol=1e-5)
  assert small.report.params_after < small.report.params_before
  return small


def _two_convs_and_head(reduce_channels=None):
  params = _params(k1=(3, 3, 4, 6), b1=(6,), k2=(3, 3, 6, 8), w=(8, 2))

  def apply_fn(p, x):
    h = jax.nn.relu(_conv(x, p["k1"]) + p["b1"])
    h = _conv(h, p["k2"])
    if reduce_channels:
      h = reduce_channels(h)
    return jax.nn.relu(h).mean(axis=(1, 2)) @ p["w"]

  return apply_fn, params


def test_unsupported_primitive_names_it_and_the_user_line():
  line = inspect.currentframe().f_lineno + 1
  apply_fn, params = _two_convs_and_head(lambda h: jnp.sort(h, axis=-1))
  with pytest.raises(structured.UnsupportedPrimitiveError) as error:
    structured.trace_model(apply_fn, params, X)
  message = str(error.value)
  assert "'sort'" in message
  assert f"test_structured_tracing.py:{line}" in message  # the user's line, not jax's
  assert "dot_general" in message and "conv_general_dilated" in message  # what is supported


def test_reduction_over_the_channel_axis_keeps_those_channels():
  """A LayerNorm-style normalization over channels mixes them: k2's channels stay."""
  apply_fn, params = _two_convs_and_head(lambda h: h - h.mean(axis=-1, keepdims=True))
  assert _summary(_groups(apply_fn, params)) == {
      "k1": ({("k1", 3), ("b1", 0)}, {("k2", 2)})}
  _check_compaction(apply_fn, params)


def test_model_outputs_are_never_pruned():
  params = _params(k1=(3, 3, 4, 6), k2=(3, 3, 6, 5))
  apply_fn = lambda p, x: _conv(jax.nn.relu(_conv(x, p["k1"])), p["k2"])
  assert _summary(_groups(apply_fn, params)) == {"k1": ({("k1", 3)}, {("k2", 2)})}


def test_grouped_convolution_keeps_its_channels_but_depthwise_couples_them():
  params = _params(k1=(3, 3, 4, 6), g=(3, 3, 3, 6), w=(6, 2))
  for groups, expected in ((2, {}), (6, {"k1": ({("k1", 3), ("g", 3)}, {("w", 0)})})):
    p = {**params, "g": params["g"][:, :, : 6 // groups]}
    apply_fn = lambda p, x, groups=groups: lax.conv_general_dilated(
        jax.nn.relu(_conv(x, p["k1"])), p["g"], (1, 1), "SAME", feature_group_count=groups,
        dimension_numbers=("NHWC", "HWIO", "NHWC")).mean(axis=(1, 2)) @ p["w"]
    assert _summary(_groups(apply_fn, p)) == expected
    if expected:
      _check_compaction(apply_fn, p)


def test_option_a_shortcut_pads_channels():
  """The parameter-free ResNet shortcut: subsample and zero-pad 4 -> 8 channels, then add.
  The middle channels of the sum are the input's; the padded ones are the branch's alone."""
  params = _params(k1=(3, 3, 4, 4), kb=(3, 3, 4, 8), w=(8, 2))

  def apply_fn(p, x):
    h = jax.nn.relu(_conv(x, p["k1"]))
    branch = lax.conv_general_dilated(h, p["kb"], (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    shortcut = jnp.pad(h[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
    return jax.nn.relu(branch + shortcut).mean(axis=(1, 2)) @ p["w"]

  groups = _groups(apply_fn, params)
  assert _summary(groups) == {"k1": ({("k1", 3), ("kb", 3)}, {("kb", 2), ("w", 0)}),
                              "kb": ({("kb", 3)}, {("w", 0)})}
  member = lambda g, path: next(s.index[:, 0] for s in groups[g].members if s.path == path)
  np.testing.assert_array_equal(member("k1", "kb"), 2 + np.arange(4))
  np.testing.assert_array_equal(member("kb", "kb"), [0, 1, 6, 7])
  for seed in range(3):
    _check_compaction(apply_fn, params, seed=seed)


def test_zero_padded_channels_without_a_producer_are_never_pruned():
  """Zero channels padded around k1's and read by a dense layer: they join no param, so no
  group holds them (there is nothing to gate) and their rows of `w` stay; k1's channels are
  read at their offsets and pruned."""
  params = _params(k1=(3, 3, 4, 6), b1=(6,), w=(10, 2))

  def apply_fn(p, x):
    h = jax.nn.relu(_conv(x, p["k1"]) + p["b1"]).mean(axis=(1, 2))
    return jnp.pad(h, ((0, 0), (3, 1))) @ p["w"]

  groups = _groups(apply_fn, params)
  assert _summary(groups) == {"k1": ({("k1", 3), ("b1", 0)}, {("w", 0)})}
  np.testing.assert_array_equal(groups["k1"].consumers[0].index[:, 0], 3 + np.arange(6))
  small = _check_compaction(apply_fn, params)
  assert small.params["w"].shape == (3 + 3 + 1, 2)  # 3 of 6 channels, the 4 padded rows


def test_nested_jit_checkpoint_and_custom_vjp_are_followed():
  @jax.custom_vjp
  def scale(x):
    return 2.0 * x

  scale.defvjp(lambda x: (2.0 * x, None), lambda _, g: (2.0 * g,))

  @jax.jit
  def block(h, k):
    return jax.checkpoint(lambda h: scale(jax.nn.gelu(_conv(h, k))))(h)

  params = _params(k1=(3, 3, 4, 6), k2=(3, 3, 6, 5), w=(5, 2))
  apply_fn = lambda p, x: block(block(x, p["k1"]), p["k2"]).mean(axis=(1, 2)) @ p["w"]
  assert _summary(_groups(apply_fn, params)) == {"k1": ({("k1", 3)}, {("k2", 2)}),
                                                 "k2": ({("k2", 3)}, {("w", 0)})}
  _check_compaction(apply_fn, params)


def test_channel_constants_and_transposes_are_sliced():
  """An NCHW program (transpose, conv in NCHW/OIHW) with a closed-over per-channel constant."""
  params = _params(k1=(6, 4, 3, 3), k2=(5, 6, 3, 3), w=(5, 2))
  gain = np.linspace(0.5, 1.5, 6).astype(np.float32)[:, None, None]

  def apply_fn(p, x):
    conv = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
    h = jax.nn.relu(conv(jnp.transpose(x, (0, 3, 1, 2)), p["k1"]) * gain)
    return jax.nn.relu(conv(h, p["k2"])).mean(axis=(2, 3)) @ p["w"]

  assert _summary(_groups(apply_fn, params)) == {"k1": ({("k1", 0)}, {("k2", 1)}),
                                                 "k2": ({("k2", 0)}, {("w", 0)})}
  _check_compaction(apply_fn, params)


def test_squeeze_excitation_gate_joins_its_channels():
  """`h * sigmoid(fc2(relu(fc1(mean(h)))))`: fc2's outputs gate h's channels (one group), and
  fc1 reads them."""
  params = _params(k1=(3, 3, 4, 6), fc1=(6, 3), fc2=(3, 6), b2=(6,), w=(6, 2))

  def apply_fn(p, x):
    h = jax.nn.relu(_conv(x, p["k1"]))
    gate = jax.nn.sigmoid(jax.nn.relu(h.mean(axis=(1, 2)) @ p["fc1"]) @ p["fc2"] + p["b2"])
    return (h * gate[:, None, None, :]).mean(axis=(1, 2)) @ p["w"]

  assert _summary(_groups(apply_fn, params)) == {
      "k1": ({("k1", 3), ("fc2", 1), ("b2", 0)}, {("fc1", 0), ("w", 0)}),
      "fc1": ({("fc1", 1)}, {("fc2", 0)})}
  _check_compaction(apply_fn, params)


def test_splitting_a_channel_axis_keeps_it():
  """A reshape of 6 channels into 2 x 3 (e.g. groups or heads) is not followed: kept."""
  params = _params(k1=(3, 3, 4, 6), w=(3, 2))
  apply_fn = lambda p, x: jax.nn.relu(_conv(x, p["k1"])).reshape(3, 6, 6, 2, 3).mean(
      axis=(1, 2, 3)) @ p["w"]
  assert _groups(apply_fn, params) == {}
