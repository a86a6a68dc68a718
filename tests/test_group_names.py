"""Channel group names stay unique where groups share a module path, and compaction refuses masks
that are not whole channel groups."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prospr_jax as pj
from prospr_jax import masks as masks_lib
from prospr_jax import structured

X_SEQ = jax.random.normal(jax.random.key(0), (2, 4, 8))  # batch 2, sequence 4, features 8
X_FLAT = jax.random.normal(jax.random.key(0), (3, 5))


class _Attention(nn.Module):
  """2-head self-attention (head dim 4) and a small MLP head."""

  @nn.compact
  def __call__(self, x):
    h = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, name="mha")(x)
    h = nn.relu(nn.Dense(8, name="mlp")(h))
    return nn.Dense(3, name="head")(h.mean(axis=1))


def _normal(seed: int, *shapes: tuple[int, ...]) -> list[jax.Array]:
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  return [jax.random.normal(k, s) / np.sqrt(s[0]) for k, s in zip(keys, shapes)]


def _kernel_list_case():
  """Two kernels in a list under one key: both groups' module path is 'w'."""
  k1, k2, head = _normal(1, (5, 6), (6, 7), (7, 2))

  def apply_fn(params, x):
    for k in params["w"]:
      x = jax.nn.relu(x @ k)
    return x @ params["head"]

  return apply_fn, {"w": [k1, k2], "head": head}


def _kernel_dict_case():
  """Two kernels under one dict key whose outputs, concatenated, are separate groups."""
  a, b, head = _normal(2, (5, 6), (5, 4), (10, 2))

  def apply_fn(params, x):
    proj = params["proj"]
    return jnp.concatenate([jax.nn.relu(x @ proj["a"]), jnp.tanh(x @ proj["b"])], -1) @ (
        params["head"])

  return apply_fn, {"proj": {"a": a, "b": b}, "head": head}


def _split_kernel_case():
  """One kernel whose two output halves feed different layers: one leaf axis, two groups."""
  k, w1, w2 = _normal(3, (5, 8), (4, 2), (4, 2))

  def apply_fn(params, x):
    h = x @ params["k"]
    return jax.nn.relu(h[:, :4]) @ params["w1"] + jnp.tanh(h[:, 4:]) @ params["w2"]

  return apply_fn, {"k": k, "w1": w1, "w2": w2}


def _attention_case():
  model = _Attention()
  variables = model.init(jax.random.key(4), X_SEQ)
  return model, variables


def _names(model, variables, x) -> list[str]:
  names = [g.name for g in structured.trace_model(model, variables, x).groups]
  assert len(set(names)) == len(names), names
  return names


def _random_channel_masks(model, variables, x):
  return structured.structured_prune("random", model, variables, None, 0.5, example_input=x,
                                     key=jax.random.key(5), min_kept_per_group=1)


def _check_prune_compact_export(model, variables, x, masked_apply) -> None:
  """Random channel masks prune; the compacted program, jitted and exported, equals the masked
  model (`masked_apply(masks, x)`) and is smaller."""
  masks = _random_channel_masks(model, variables, x)
  expected = masked_apply(masks, x)
  small = structured.compact(model, variables, masks, x)
  np.testing.assert_allclose(small(x), expected, rtol=1e-5, atol=1e-5)
  assert small.report.params_after < small.report.params_before
  exported = jax.export.export(jax.jit(small.apply))(small.params, small.state, x)
  restored = jax.export.deserialize(exported.serialize())
  np.testing.assert_allclose(restored.call(small.params, small.state, x), expected,
                             rtol=1e-5, atol=1e-5)


def _masked_function(apply_fn, params):
  return lambda masks, x: apply_fn(masks_lib.apply_masks(params, masks), x)


def test_attention_heads_and_head_dim_axes_get_their_own_names():
  model, variables = _attention_case()
  groups = {g.name: g for g in structured.trace_model(model, variables, X_SEQ).groups}
  assert len(groups) == len(_names(model, variables, X_SEQ))
  heads, head_dim = groups["mha/query:axis1"], groups["mha/query:axis2"]  # kernel [8, 2, 4]
  assert (heads.size, head_dim.size) == (2, 4)
  assert {(m.path, m.axis) for m in heads.members} >= {
      ("mha/query/kernel", 1), ("mha/key/kernel", 1), ("mha/value/kernel", 1)}
  assert {(m.path, m.axis) for m in head_dim.members} >= {
      ("mha/query/kernel", 2), ("mha/key/kernel", 2)}


def test_attention_prunes_compacts_and_exports():
  model, variables = _attention_case()
  _check_prune_compact_export(
      model, variables, X_SEQ,
      lambda masks, x: model.apply(
          {"params": masks_lib.apply_masks(variables["params"], masks)}, x))


@pytest.mark.parametrize("case, expected", [
    (_kernel_list_case, ["w/0", "w/1"]),
    (_kernel_dict_case, ["proj/a", "proj/b"]),
    (_split_kernel_case, ["k@0", "k@4"]),  # one leaf axis: the channel offset tells them apart
])
def test_kernels_sharing_a_module_path_get_unique_names(case, expected):
  apply_fn, params = case()
  assert _names(apply_fn, params, X_FLAT) == expected
  _check_prune_compact_export(apply_fn, params, X_FLAT, _masked_function(apply_fn, params))


def test_duplicate_group_names_are_refused():
  apply_fn, params = _kernel_list_case()
  groups = structured.trace_model(apply_fn, params, X_FLAT).groups
  twins = [groups[0], dataclasses.replace(groups[1], name=groups[0].name)]
  keep = {"w/0": np.ones(6, bool), "w/1": np.ones(7, bool)}
  with pytest.raises(ValueError, match="names must be unique, but 'w/0' names 2 groups"):
    structured.expand_masks(params, twins, keep)
  with pytest.raises(ValueError, match="'w/1' has shape \\(6,\\).*must have shape \\(7,\\)"):
    structured.expand_masks(params, groups, {**keep, "w/1": np.ones(6, bool)})


def _dense_head_case():
  k1, head = _normal(6, (5, 6), (6, 2))

  def apply_fn(params, x):
    return jax.nn.relu(x @ params["k1"] + params["b1"]) @ params["head"]

  return apply_fn, {"b1": jnp.full(6, 0.1), "head": head, "k1": k1}


def test_compact_refuses_single_weight_masks_naming_the_leaf():
  apply_fn, params = _dense_head_case()
  masks = masks_lib.ones_masks(params, dtype=bool)
  masks["k1"] = masks["k1"].at[2, 3].set(False)
  with pytest.raises(ValueError, match=r"mask at 'k1' prunes single weights \(1 outside "
                                       r"removed channels\), not whole channels"):
    structured.compact(apply_fn, params, masks, X_FLAT)
  unstructured = pj.prune("magnitude", params, 0.3)  # prunes head's weights too: 'head' < 'k1'
  with pytest.raises(ValueError, match="mask at 'head' prunes single weights"):
    structured.compact(apply_fn, params, unstructured, X_FLAT)


def test_compact_refuses_non_bool_masks():
  apply_fn, params = _dense_head_case()
  masks = _random_channel_masks(apply_fn, params, X_FLAT)
  floats = jax.tree.map(lambda m: m.astype(jnp.float32), masks)
  with pytest.raises(TypeError, match="'b1' has dtype float32; masks must be bool"):
    structured.compact(apply_fn, params, floats, X_FLAT)


def test_compact_accepts_channel_masks_with_dead_consumer_entries_kept():
  """Leaving a removed channel's consumer entries unpruned changes nothing: they read zeros."""
  apply_fn, params = _dense_head_case()
  masks = _random_channel_masks(apply_fn, params, X_FLAT)
  assert not np.all(masks["head"])
  masks = {**masks, "head": jnp.ones_like(masks["head"])}
  small = structured.compact(apply_fn, params, masks, X_FLAT)
  np.testing.assert_allclose(small(X_FLAT), _masked_function(apply_fn, params)(masks, X_FLAT),
                             rtol=1e-5, atol=1e-5)
  assert small.params["head"].shape == (3, 2)


def test_channel_groups_refuse_names_that_collide(monkeypatch):
  """The invariant is checked where the groups are built: unqualified module paths collide."""
  apply_fn, params = _kernel_list_case()
  monkeypatch.setattr(structured.groups, "_group_names", lambda parts: [p.module for p in parts])
  with pytest.raises(ValueError, match="'w' names 2 groups"):
    structured.trace_model(apply_fn, params, X_FLAT)
