"""Effective sparsity on hand-built masks whose answer is known."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prospr_jax.analysis import connectivity
from prospr_jax.adapters import LinenApply


def _mlp(params, x):
  """Bias-free ReLU MLP over `l0`, `l1`, `l2`, with an optional bias `b1` after `l1`."""
  h = jax.nn.relu(x @ params["l0"])
  h = jax.nn.relu(h @ params["l1"] + params.get("b1", 0.0))
  return h @ params["l2"]


def _bools(rows):
  return jnp.array(rows, bool)


# 3 inputs -> 3 hidden -> 3 hidden -> 2 outputs. Hidden unit h0 is fed by x0 and feeds g0,
# which reaches the output: that chain is effective. h1 gets no input weight (its outgoing
# weight is dead); h2 is fed but feeds nothing (its incoming weight is dead); g2 feeds the
# output but is fed by nobody.
MASKS = {
    "l0": _bools([[1, 0, 0], [0, 0, 1], [0, 0, 0]]),   # x0->h0, x1->h2
    "l1": _bools([[1, 0, 0], [0, 1, 0], [0, 0, 0]]),   # h0->g0, h1->g1
    "l2": _bools([[1, 0], [0, 1], [0, 1]]),            # g0->o0, g1->o1, g2->o1
}
EFFECTIVE = {
    "l0": _bools([[1, 0, 0], [0, 0, 0], [0, 0, 0]]),
    "l1": _bools([[1, 0, 0], [0, 0, 0], [0, 0, 0]]),
    "l2": _bools([[1, 0], [0, 0], [0, 0]]),
}


def _params(key):
  keys = jax.random.split(key, 3)
  return {f"l{i}": jax.random.normal(k, m.shape) for i, (k, m) in
          enumerate(zip(keys, MASKS.values()))}


@pytest.mark.parametrize("bias", [False, True])
def test_dead_ends_are_not_effective_even_when_a_bias_feeds_them(bias):
  params, masks = _params(jax.random.PRNGKey(0)), dict(MASKS)
  if bias:  # a bias on g drives g1 and g2 without any path from the input
    params["b1"], masks["b1"] = jnp.array([0.5, -0.7, 0.3]), jnp.ones(3, bool)
  effective = connectivity.effective_masks(masks, params, apply_fn=_mlp, input_shape=(3,))
  for name, expected in EFFECTIVE.items():
    np.testing.assert_array_equal(effective[name], expected, err_msg=name)
  summary = connectivity.connectivity_summary(masks, effective)
  assert summary["effective_density/total"] == pytest.approx(3 / (9 + 9 + 6))
  assert summary["effective_density/l2"] == pytest.approx(1 / 6)
  assert summary["inactive_fraction"] == pytest.approx(1 - 3 / 7)  # 7 kept, 3 effective
  assert summary["empty_layers"] == [] and summary["disconnected_layers"] == []


def test_an_empty_layer_disconnects_every_layer_of_a_chain():
  params = _params(jax.random.PRNGKey(0))
  masks = {**MASKS, "l1": jnp.zeros((3, 3), bool)}
  effective = connectivity.effective_masks(masks, params, apply_fn=_mlp, input_shape=(3,))
  summary = connectivity.connectivity_summary(masks, effective)
  assert summary["empty_layers"] == ["l1"]
  assert summary["disconnected_layers"] == ["l0", "l1", "l2"]
  assert summary["effective_density/total"] == 0.0 and summary["inactive_fraction"] == 1.0


class _TwoConvs(nn.Module):
  """conv a (2 -> 3 channels) -> BatchNorm -> ReLU -> conv b (3 -> 2) -> mean -> dense head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(3, (3, 3), use_bias=False, name="a")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
    x = nn.Conv(2, (3, 3), use_bias=False, name="b")(x)
    return nn.Dense(2, name="head")(jnp.mean(x, axis=(1, 2)))


def test_conv_channel_with_no_input_weight_cuts_its_outgoing_weights():
  model = _TwoConvs()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 2)))
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  masks["a"]["kernel"] = masks["a"]["kernel"].at[..., 1].set(False)  # channel 1 gets nothing
  masks["b"]["kernel"] = masks["b"]["kernel"].at[..., 0].set(False)  # b's channel 0 is unused
  masks["head"]["kernel"] = masks["head"]["kernel"].at[0, :].set(False)
  effective = connectivity.effective_masks(masks, params, apply_fn=LinenApply(model, state),
                                           input_shape=(6, 6, 2))
  expected_b = np.zeros((3, 3, 3, 2), bool)
  expected_b[:, :, [0, 2], 1] = True  # from live channels 0 and 2 into the used channel 1
  np.testing.assert_array_equal(effective["b"]["kernel"], expected_b)
  np.testing.assert_array_equal(effective["a"]["kernel"], masks["a"]["kernel"])
  np.testing.assert_array_equal(effective["head"]["kernel"], masks["head"]["kernel"])


def test_per_channel_masks_are_refused():
  params = _params(jax.random.PRNGKey(0))
  masks = {**MASKS, "l0": jnp.ones((1, 3), bool)}
  with pytest.raises(ValueError, match="full-size masks"):
    connectivity.effective_masks(masks, params, apply_fn=_mlp, input_shape=(3,))
