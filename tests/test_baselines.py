"""GraSP, SynFlow, iterative SNIP and FORCE checked against independent computations."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prospr_jax as pj
from conftest import make_batches, mlp_loss, mlp_params
from prospr_jax.adapters import LinenApply
from prospr_jax.saliency import grasp, snip, synflow


def _bn_mlp_loss(params, batch):
  """A tanh MLP with biases and a train-mode BatchNorm (scale, bias) after its first layer."""
  h = batch["image"] @ params["l1"]["kernel"] + params["l1"]["bias"]
  h = (h - h.mean(0)) / jnp.sqrt(h.var(0) + 1e-5) * params["bn"]["scale"] + params["bn"]["bias"]
  logits = jnp.tanh(h) @ params["l2"]["kernel"] + params["l2"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def test_grasp_takes_g_and_hg_over_the_kernels_only_as_its_authors(x64):
  """θ ⊙ (H_ww g_w) with w the kernels, from `jax.hessian` of the loss of the kernels alone.

  The model has biases and BatchNorm params; taking g and Hg over all params (the earlier,
  wrong version) changes these scores, which the last assertion checks.
  """
  key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
  params = mlp_params(key1, dims=(4, 3, 2), dtype=jnp.float64)
  params["bn"] = {"scale": 1.0 + 0.3 * jax.random.normal(key2, (3,), jnp.float64),
                  "bias": 0.2 * jax.random.normal(key3, (3,), jnp.float64)}
  batches = make_batches(jax.random.PRNGKey(1), 2, shape=(4,), num_classes=2,
                         dtype=jnp.float64)
  kernels = (params["l1"]["kernel"], params["l2"]["kernel"])
  flat, unravel = jax.flatten_util.ravel_pytree(kernels)

  def kernel_loss(w, batch):
    k1, k2 = unravel(w)
    return _bn_mlp_loss({**params, "l1": {**params["l1"], "kernel": k1},
                         "l2": {**params["l2"], "kernel": k2}}, batch)

  g = sum(jax.grad(kernel_loss)(flat, b) for b in batches) / 2
  h = sum(jax.hessian(kernel_loss)(flat, b) for b in batches) / 2
  expected = flat * (h @ g)
  scores = grasp.grasp_scores(_bn_mlp_loss, params, batches)
  got = jax.flatten_util.ravel_pytree((scores["l1"]["kernel"], scores["l2"]["kernel"]))[0]
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
  for leaf in (scores["l1"]["bias"], scores["l2"]["bias"], scores["bn"]["scale"]):
    assert not np.any(leaf)

  all_flat, all_unravel = jax.flatten_util.ravel_pytree(params)
  all_loss = lambda w, b: _bn_mlp_loss(all_unravel(w), b)
  g_all = sum(jax.grad(all_loss)(all_flat, b) for b in batches) / 2
  h_all = sum(jax.hessian(all_loss)(all_flat, b) for b in batches) / 2
  all_params_scores = all_unravel(all_flat * (h_all @ g_all))
  all_params_kernels = jax.flatten_util.ravel_pytree(
      (all_params_scores["l1"]["kernel"], all_params_scores["l2"]["kernel"]))[0]
  assert np.max(np.abs(all_params_kernels - expected)) > 1e-3 * np.max(np.abs(expected))


def test_grasp_keeps_highest_theta_hg_i_e_removes_highest_paper_score():
  params = mlp_params(jax.random.PRNGKey(0))
  batches = make_batches(jax.random.PRNGKey(1), 2)
  scores = grasp.grasp_scores(mlp_loss, params, batches)
  masks = pj.prune("grasp", params, 0.5, loss_fn=mlp_loss, batches=batches)
  s = np.concatenate([np.ravel(scores[k]["kernel"]) for k in ("l1", "l2")])
  m = np.concatenate([np.ravel(masks[k]["kernel"]) for k in ("l1", "l2")])
  paper_score = -s  # S(-δ) = -θ ⊙ Hg in the GraSP paper; its largest values are removed.
  assert paper_score[~m].min() >= paper_score[m].max()


def _bias_free_relu_mlp(key, dims):
  keys = jax.random.split(key, len(dims) - 1)
  return {f"l{i}": jax.random.normal(k, (a, b)) for i, (k, a, b) in
          enumerate(zip(keys, dims[:-1], dims[1:]))}


def _relu_mlp_apply(params, x):
  for i in range(len(params)):
    x = x @ params[f"l{i}"]
    if i < len(params) - 1:
      x = jax.nn.relu(x)
  return x


def test_synflow_layerwise_conservation(x64):
  """Tanaka et al. 2020: for a bias-free ReLU MLP every layer's total score equals R."""
  params = _bias_free_relu_mlp(jax.random.PRNGKey(0), (5, 7, 6, 3))
  params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
  ones = pj.ones_masks(params, dtype=bool)
  scores = synflow.synflow_scores(params, ones, apply_fn=_relu_mlp_apply, input_shape=(5,))
  r = _relu_mlp_apply(jax.tree.map(jnp.abs, params), jnp.ones((1, 5))).sum()
  for name in params:
    np.testing.assert_allclose(scores[name].sum(), r, rtol=1e-10)


def test_synflow_float64_option_and_iterative_masks_prune_monotonically():
  params = _bias_free_relu_mlp(jax.random.PRNGKey(0), (5, 7, 6, 3))
  select = functools.partial(pj.masks_from_scores, min_kept_per_layer=1)
  masks = synflow.synflow_masks(_relu_mlp_apply, params, (5,), 0.7, select, num_rounds=10,
                                float64=True)
  n = 5 * 7 + 7 * 6 + 6 * 3
  assert sum(int(m.sum()) for m in jax.tree.leaves(masks)) == round((1 - 0.7) * n)
  # The pruned network keeps a path from input to output (R > 0).
  pruned = pj.apply_masks(jax.tree.map(jnp.abs, params), masks)
  assert _relu_mlp_apply(pruned, jnp.ones((1, 5))).sum() > 0


def test_synflow_with_batchnorm_in_eval_mode_runs_through_linen_apply():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
      x = nn.Dense(8, use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(3, name="head")(nn.relu(x))

  model = Net()
  variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 5)), train=False)
  masks = pj.prune("synflow", variables["params"], 0.5,
                   apply_fn=LinenApply(model, {"batch_stats": variables["batch_stats"]}),
                   input_shape=(5,), num_rounds=5, float64=True)
  assert pj.density_summary(masks, variables["params"])["density/total"] == pytest.approx(0.5,
                                                                                          abs=0.01)


def test_iterative_snip_never_revives_and_one_round_equals_snip():
  params = mlp_params(jax.random.PRNGKey(0))
  batches = make_batches(jax.random.PRNGKey(1), 2)
  rounds = []

  def recording_select(scores, sparsity, eligible=None):
    m = pj.masks_from_scores(scores, sparsity, eligible=eligible)
    rounds.append(m)
    return m

  snip.iterative_snip_masks(mlp_loss, params, batches, 0.8, recording_select, num_rounds=5)
  for before, after in zip(rounds, rounds[1:]):
    for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
      assert not np.any(np.asarray(a) & ~np.asarray(b))
  one_round = snip.iterative_snip_masks(mlp_loss, params, batches, 0.8, pj.masks_from_scores,
                                        num_rounds=1)
  snip_masks = pj.prune("snip", params, 0.8, loss_fn=mlp_loss, batches=batches)
  jax.tree.map(np.testing.assert_array_equal, one_round, snip_masks)


def test_force_scores_use_gradient_at_the_masked_network():
  params = mlp_params(jax.random.PRNGKey(0))
  (batch,) = make_batches(jax.random.PRNGKey(1), 1)
  masks = pj.prune("magnitude", params, 0.5)
  loss_fn, state = pj.saliency.with_state(mlp_loss, None)
  got = snip.connection_sensitivity(params, state, batch, masks, loss_fn=loss_fn)
  g = jax.grad(mlp_loss)(pj.apply_masks(params, masks), batch)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6),
               got, jax.tree.map(lambda p, gg: p * gg, params, g))
  # FORCE may revive pruned weights: its masks differ from iterative SNIP on this problem.
  f = pj.prune("force", params, 0.9, loss_fn=mlp_loss, batches=[batch], num_rounds=4)
  i = pj.prune("iterative_snip", params, 0.9, loss_fn=mlp_loss, batches=[batch], num_rounds=4)
  kept = sum(int(f[k]["kernel"].sum()) for k in ("l1", "l2"))
  assert kept == round((1 - 0.9) * (6 * 5 + 5 * 3))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(f), jax.tree.leaves(i)))


def test_kept_fraction_schedule_is_exponential():
  s = snip.kept_fraction_schedule(0.99, 4)
  np.testing.assert_allclose(1 - np.array(s), 0.01 ** (np.arange(1, 5) / 4))
  assert s[-1] == pytest.approx(0.99)
