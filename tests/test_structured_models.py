"""Structured pruning of models the library has never seen, written here with names of their own.

For each: channel groups against a hand-derived answer, ProsPr structured at 50% of the
channels, compaction, outputs equal to the masked model's, fewer params.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from prospr_jax import masks as masks_lib
from prospr_jax import structured

SHAPE = (8, 8, 3)
NUM_CLASSES = 5


def _batches(seed: int, n: int = 2, shape=SHAPE) -> list[dict[str, jax.Array]]:
  keys = jax.random.split(jax.random.key(seed), n)
  return [{"image": jax.random.normal(k, (4, *shape)),
           "label": jnp.arange(4) % NUM_CLASSES} for k in keys]


def _noisy(tree: Any, seed: int) -> Any:
  """`tree` with every leaf moved by N(0, 0.3) noise (BatchNorm variances kept positive), so
  that biases, BatchNorm shifts and running statistics are far from their identity-like initial
  values and the tests bite."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = []
  for (path, x), k in zip(leaves, keys):
    if jnp.issubdtype(x.dtype, jnp.floating):  # not PRNG keys and counts
      x = x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
      x = jnp.abs(x) + 0.1 if "var" in masks_lib.path_str(path).split("/") else x
    noisy.append(x)
  return jax.tree.unflatten(treedef, noisy)


@dataclasses.dataclass
class Case:
  """A model, its variables (None for NNX), the masked model's outputs, the expected groups."""

  model: Any
  variables: Any
  masked_outputs: Callable[[Any, jax.Array], jax.Array]  # (masks, x) -> outputs
  expected: dict[str, tuple[set, set]]  # {group: ({(member path, axis)}, {(consumer, axis)})}
  params: Any
  shape: tuple[int, ...] = SHAPE


def _signature(groups) -> dict[str, tuple[set, set]]:
  return {g.name: ({(s.path, s.axis) for s in g.members}, {(s.path, s.axis) for s in g.consumers})
          for g in groups}


# --- The models. ------------------------------------------------------------------------------


class FeatureCNN(nn.Module):
  """A linen CNN named like torchvision's `features` / `classifier`."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, width in enumerate((6, 8)):
      x = nn.Conv(width, (3, 3), name=f"features_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, name=f"norm_{i}")(x)
      x = nn.relu(x)
    return nn.Dense(NUM_CLASSES, name="classifier")(x.mean(axis=(1, 2)))


def _linen_case(module: nn.Module, expected, seed: int = 0, shape=SHAPE) -> Case:
  variables = _noisy(module.init(jax.random.key(seed), jnp.zeros((1, *shape))), seed + 1)

  def masked_outputs(masks, x):
    params = masks_lib.apply_masks(variables["params"], masks)
    return module.apply({**variables, "params": params}, x)

  return Case(module, variables, masked_outputs, expected, variables["params"], shape)


def _linen_cnn() -> Case:
  return _linen_case(FeatureCNN(), {
      "features_0": ({("features_0/kernel", 3), ("features_0/bias", 0), ("norm_0/scale", 0),
                      ("norm_0/bias", 0)}, {("features_1/kernel", 2)}),
      "features_1": ({("features_1/kernel", 3), ("features_1/bias", 0), ("norm_1/scale", 0),
                      ("norm_1/bias", 0)}, {("classifier/kernel", 0)}),
  })


class NnxCNN(nnx.Module):
  """An NNX CNN with BatchNorm, and dropout (a PRNG key in its state)."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv_in = nnx.Conv(3, 6, (3, 3), rngs=rngs)
    self.bn_in = nnx.BatchNorm(6, rngs=rngs)
    self.conv_mid = nnx.Conv(6, 8, (3, 3), use_bias=False, rngs=rngs)
    self.bn_mid = nnx.BatchNorm(8, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.out = nnx.Linear(8, NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn_in(self.conv_in(x)))
    x = nnx.relu(self.bn_mid(self.conv_mid(x)))
    return self.out(self.drop(x.mean(axis=(1, 2))))


def _nnx_case(make: Callable[[], nnx.Module], expected) -> Case:
  module = make()
  graphdef, state = nnx.split(module)
  nnx.update(module, _noisy(state, 3))

  def masked_outputs(masks, x):
    copy = nnx.merge(*nnx.split(module), copy=True)
    nnx.update(copy, masks_lib.apply_masks(nnx.state(copy, nnx.Param), masks))
    copy.eval()
    return copy(x)

  return Case(module, None, masked_outputs, expected, nnx.state(module, nnx.Param))


def _nnx_cnn() -> Case:
  return _nnx_case(lambda: NnxCNN(nnx.Rngs(0)), {
      "conv_in": ({("conv_in/kernel/value", 3), ("conv_in/bias/value", 0),
                   ("bn_in/scale/value", 0), ("bn_in/bias/value", 0)},
                  {("conv_mid/kernel/value", 2)}),
      "conv_mid": ({("conv_mid/kernel/value", 3), ("bn_mid/scale/value", 0),
                    ("bn_mid/bias/value", 0)}, {("out/kernel/value", 0)}),
  })


def mlp_apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """A plain-JAX MLP over a flat dict of arrays: flatten, relu and tanh hidden layers."""
  h = x.reshape(x.shape[0], -1)
  h = jax.nn.relu(h @ params["w_in"] + params["b_in"])
  h = jnp.tanh(h @ params["w_hidden"] + params["b_hidden"])
  return h @ params["w_out"] + params["b_out"]


def _mlp_case() -> Case:
  sizes = [(int(np.prod(SHAPE)), 12), (12, 10), (10, NUM_CLASSES)]
  keys = jax.random.split(jax.random.key(4), 6)
  params = {}
  for (name, (n_in, n_out)), k, kb in zip(zip(("in", "hidden", "out"), sizes), keys, keys[3:]):
    params[f"w_{name}"] = jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in)
    params[f"b_{name}"] = 0.3 * jax.random.normal(kb, (n_out,))
  masked = lambda masks, x: mlp_apply(masks_lib.apply_masks(params, masks), x)
  return Case(mlp_apply, params, masked, {
      "w_in": ({("w_in", 1), ("b_in", 0)}, {("w_hidden", 0)}),
      "w_hidden": ({("w_hidden", 1), ("b_hidden", 0)}, {("w_out", 0)}),
  }, params)


class ProjectionResidual(nn.Module):
  """A stem, then a residual block whose shortcut is a 1x1 projection (4 -> 8 channels)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name)
    x = nn.relu(bn("stem_norm")(nn.Conv(4, (3, 3), use_bias=False, name="stem")(x)))
    y = nn.relu(bn("norm_a")(nn.Conv(6, (3, 3), use_bias=False, name="conv_a")(x)))
    y = bn("norm_b")(nn.Conv(8, (3, 3), use_bias=False, name="conv_b")(y))
    shortcut = bn("proj_norm")(nn.Conv(8, (1, 1), use_bias=False, name="proj")(x))
    return nn.Dense(NUM_CLASSES, name="logits")(nn.relu(y + shortcut).mean(axis=(1, 2)))


def _conv_bn(conv: str, norm: str) -> set:
  return {(f"{conv}/kernel", 3), (f"{norm}/scale", 0), (f"{norm}/bias", 0)}


def _residual_case() -> Case:
  return _linen_case(ProjectionResidual(), {
      "stem": (_conv_bn("stem", "stem_norm"), {("conv_a/kernel", 2), ("proj/kernel", 2)}),
      "conv_a": (_conv_bn("conv_a", "norm_a"), {("conv_b/kernel", 2)}),
      # The addition joins conv_b and the projection; the projection is fewer layers deep.
      "proj": (_conv_bn("conv_b", "norm_b") | _conv_bn("proj", "proj_norm"),
               {("logits/kernel", 0)}),
  })


class DenseConcat(nn.Module):
  """DenseNet-style: every layer reads the concatenation of all earlier feature maps."""

  @nn.compact
  def __call__(self, x):
    features = [nn.relu(nn.Conv(4, (3, 3), name="entry")(x))]
    for i in range(2):
      grown = nn.relu(nn.Conv(3, (3, 3), name=f"grow_{i}")(jnp.concatenate(features, -1)))
      features.append(grown)
    return nn.Dense(NUM_CLASSES, name="fc")(jnp.concatenate(features, -1).mean(axis=(1, 2)))


def _dense_case() -> Case:
  member = lambda conv: {(f"{conv}/kernel", 3), (f"{conv}/bias", 0)}
  return _linen_case(DenseConcat(), {
      "entry": (member("entry"), {("grow_0/kernel", 2), ("grow_1/kernel", 2), ("fc/kernel", 0)}),
      "grow_0": (member("grow_0"), {("grow_1/kernel", 2), ("fc/kernel", 0)}),
      "grow_1": (member("grow_1"), {("fc/kernel", 0)}),
  })


class SeparableBlock(nn.Module):
  """A conv, then a depthwise-separable block: depthwise 3x3 and pointwise 1x1, with BN."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, name=name)
    x = nn.relu(bn("bn0")(nn.Conv(6, (3, 3), use_bias=False, name="expand")(x)))
    x = nn.relu(bn("bn1")(nn.Conv(6, (3, 3), feature_group_count=6, use_bias=False,
                                  name="depthwise")(x)))
    x = nn.relu(bn("bn2")(nn.Conv(8, (1, 1), use_bias=False, name="pointwise")(x)))
    return nn.Dense(NUM_CLASSES, name="head_fc")(x.mean(axis=(1, 2)))


def _separable_case() -> Case:
  return _linen_case(SeparableBlock(), {
      # A depthwise conv reads each input channel once: its channels are its input's.
      "expand": (_conv_bn("expand", "bn0") | _conv_bn("depthwise", "bn1"),
                 {("pointwise/kernel", 2)}),
      "pointwise": (_conv_bn("pointwise", "bn2"), {("head_fc/kernel", 0)}),
  })


class FlattenHead(nn.Module):
  """Two convs with a max-pool, then a flatten and two dense layers."""

  @nn.compact
  def __call__(self, x):
    x = nn.max_pool(nn.relu(nn.Conv(4, (3, 3), name="c1")(x)), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(6, (3, 3), name="c2")(x))
    x = nn.relu(nn.Dense(16, name="d1")(x.reshape(x.shape[0], -1)))
    return nn.Dense(NUM_CLASSES, name="d2")(x)


def _flatten_case() -> Case:
  member = lambda layer, axis: {(f"{layer}/kernel", axis), (f"{layer}/bias", 0)}
  return _linen_case(FlattenHead(), {
      "c1": (member("c1", 3), {("c2/kernel", 2)}),
      "c2": (member("c2", 3), {("d1/kernel", 0)}),
      "d1": (member("d1", 1), {("d2/kernel", 0)}),
  })


CASES = {
    "linen_cnn": _linen_cnn,
    "nnx_cnn": _nnx_cnn,
    "dict_mlp": _mlp_case,
    "projection_residual": _residual_case,
    "dense_concat": _dense_case,
    "depthwise_separable": _separable_case,
    "flatten_head": _flatten_case,
}


# --- The tests. -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_prospr_prune_and_compact_a_model_never_seen(name):
  case = CASES[name]()
  batches = _batches(1, shape=case.shape)
  x = batches[0]["image"]
  traced = structured.trace_model(case.model, case.variables, x)
  assert _signature(traced.groups) == case.expected
  masks = structured.structured_prune(
      "prospr", case.model, case.variables, batches, 0.5, min_kept_per_group=1, num_steps=1,
      optimizer=optax.sgd(0.05))
  keep = structured.channels_from_masks(case.params, traced.groups, masks)
  assert sum(int(k.sum()) for k in keep.values()) == round(0.5 * structured.num_channels(
      traced.groups))
  small = structured.compact(case.model, case.variables, masks, x)
  masked = case.masked_outputs(masks, x)
  np.testing.assert_allclose(small(x), masked, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.jit(small.apply)(small.params, small.state, x), masked,
                             rtol=1e-5, atol=1e-5)
  dense = case.masked_outputs(jax.tree.map(jnp.ones_like, masks), x)
  assert not np.allclose(dense, masked, atol=1e-3)  # pruning changed the function
  report = small.report
  assert report.params_after < report.params_before == structured.count_params(case.params)
  assert report.params_after == structured.count_params(small.params)
  assert report.macs_after < report.macs_before


def test_dense_concat_consumers_read_their_offsets():
  case = _dense_case()
  groups = {g.name: g for g in structured.trace_model(case.model, case.variables,
                                                      _batches(0)[0]["image"]).groups}
  index = lambda group, path: next(s.index[:, 0] for s in groups[group].consumers
                                   if s.path == path)
  np.testing.assert_array_equal(index("entry", "grow_1/kernel"), np.arange(4))
  np.testing.assert_array_equal(index("grow_0", "grow_1/kernel"), 4 + np.arange(3))
  np.testing.assert_array_equal(index("grow_0", "fc/kernel"), 4 + np.arange(3))
  np.testing.assert_array_equal(index("grow_1", "fc/kernel"), 7 + np.arange(3))


def test_flatten_consumer_owns_one_row_per_position():
  case = _flatten_case()
  groups = {g.name: g for g in structured.trace_model(case.model, case.variables,
                                                      _batches(0)[0]["image"]).groups}
  (d1,) = groups["c2"].consumers
  # c2's map is 4x4x6, flattened position-major: channel c owns rows 6 * p + c.
  np.testing.assert_array_equal(d1.index, np.arange(6)[:, None] + 6 * np.arange(16))


def test_nnx_compaction_gives_a_smaller_module():
  case = _nnx_cnn()
  x = _batches(2)[0]["image"]
  masks = structured.structured_prune("magnitude", case.model, None, None, 0.5, example_input=x,
                                      min_kept_per_group=1)
  small = structured.compact(case.model, None, masks, x)
  module = small.module
  module.eval()
  np.testing.assert_allclose(module(x), case.masked_outputs(masks, x), rtol=1e-5, atol=1e-5)
  kept = module.bn_in.scale.get_value().shape[0]
  assert module.conv_in.out_features == module.conv_mid.in_features == kept < 6
  assert module.out.in_features == module.conv_mid.out_features < 8


def test_compact_program_is_exportable():
  case = _residual_case()
  x = _batches(0)[0]["image"]
  masks = structured.structured_prune("random", case.model, case.variables, None, 0.5,
                                      example_input=x, key=jax.random.key(0),
                                      min_kept_per_group=1)
  small = structured.compact(case.model, case.variables, masks, x)
  batch = jax.export.symbolic_shape("b")[0]
  exported = jax.export.export(jax.jit(small.apply))(
      small.params, small.state, jax.ShapeDtypeStruct((batch, *SHAPE), jnp.float32))
  restored = jax.export.deserialize(exported.serialize())
  for n in (1, 4):
    xs = jnp.concatenate([x] * 2)[:n]
    np.testing.assert_allclose(restored.call(small.params, small.state, xs),
                               case.masked_outputs(masks, xs), rtol=1e-5, atol=1e-5)
