"""The keep_masked optax transformation keeps pruned weights exactly zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import prospr_jax as pj
from conftest import make_batches, mlp_loss, mlp_params


def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay():
  params = mlp_params(jax.random.PRNGKey(0))
  masks = pj.prune("magnitude", params, 0.6)
  tx = optax.chain(pj.keep_masked(masks), optax.add_decayed_weights(5e-4),
                   optax.sgd(0.1, momentum=0.9))
  params = pj.apply_masks(params, masks)
  start = params
  opt_state = tx.init(params)
  for batch in make_batches(jax.random.PRNGKey(1), 10):
    updates, opt_state = tx.update(jax.grad(mlp_loss)(params, batch), opt_state, params)
    params = optax.apply_updates(params, updates)
  for p, m, p0 in zip(jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(start)):
    m = np.broadcast_to(np.asarray(m), p.shape)
    assert np.all(np.asarray(p)[~m] == 0.0)
    assert np.all(np.asarray(p)[m] != np.asarray(p0)[m])  # kept weights did train


def test_without_the_transform_pruned_weights_move():
  """Control: the same run without keep_masked revives pruned weights, so the test above bites."""
  params = mlp_params(jax.random.PRNGKey(0))
  masks = pj.prune("magnitude", params, 0.6)
  params = pj.apply_masks(params, masks)
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)
  batch = make_batches(jax.random.PRNGKey(1), 1)[0]
  updates, _ = tx.update(jax.grad(mlp_loss)(params, batch), opt_state, params)
  moved = optax.apply_updates(params, updates)["l1"]["kernel"]
  assert np.any(np.asarray(moved)[~np.asarray(masks["l1"]["kernel"])] != 0)


def test_nan_gradient_of_a_pruned_weight_does_not_leak():
  params = {"w": jnp.ones((2, 2))}
  masks = {"w": jnp.array([[True, False], [True, True]])}
  tx = pj.keep_masked(masks)
  updates, _ = tx.update({"w": jnp.array([[1.0, jnp.nan], [2.0, 3.0]])}, tx.init(params))
  np.testing.assert_array_equal(updates["w"], [[1.0, 0.0], [2.0, 3.0]])
