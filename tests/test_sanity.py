"""Sanity checks (shuffle, invert, reinit): in the library, in `prune` and in training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prospr_jax as pj
from conftest import make_batches, mlp_loss, mlp_params
from configs import test as test_config
from prospr_jax import models
from prospr_jax.experiment import prune_config, train
from prospr_jax.analysis import sanity


def _counts(masks):
  return [int(np.sum(m)) for path, m in jax.tree_util.tree_leaves_with_path(masks)
          if pj.default_filter(path, m)]


def test_shuffle_keeps_every_layer_count_and_moves_the_kept_positions():
  params = mlp_params(jax.random.PRNGKey(0), dims=(30, 20, 10))
  masks = pj.prune("magnitude", params, 0.8)
  shuffled = sanity.shuffle_within_layers(masks, jax.random.PRNGKey(1))
  assert _counts(shuffled) == _counts(masks)
  for name in ("l1", "l2"):
    assert not np.array_equal(shuffled[name]["kernel"], masks[name]["kernel"])
    assert shuffled[name]["bias"].all()  # not prunable: unchanged all-True
  again = sanity.shuffle_within_layers(masks, jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, again, shuffled)  # deterministic per key


def test_invert_keeps_each_layers_lowest_scores_at_the_same_count():
  scores = {"a": {"kernel": jnp.arange(12.0).reshape(3, 4)},
            "b": {"kernel": -jnp.arange(6.0).reshape(2, 3)}}
  masks = {"a": {"kernel": jnp.arange(12).reshape(3, 4) >= 9},       # the top 3 of layer a
           "b": {"kernel": jnp.array([[True, False, False], [False, False, False]])}}
  inverted = sanity.invert_selection(scores, masks)
  np.testing.assert_array_equal(inverted["a"]["kernel"], jnp.arange(12).reshape(3, 4) < 3)
  np.testing.assert_array_equal(  # b's lowest score is its last entry (-5)
      inverted["b"]["kernel"], [[False, False, False], [False, False, True]])


def test_prune_invert_keeps_lowest_snip_scores_per_layer():
  params = mlp_params(jax.random.PRNGKey(0), dims=(30, 20, 10))
  batches = make_batches(jax.random.PRNGKey(1), 1, shape=(30,), num_classes=10)
  masks = pj.prune("snip", params, 0.9, loss_fn=mlp_loss, batches=batches)
  inverted = pj.prune("snip", params, 0.9, loss_fn=mlp_loss, batches=batches, invert=True)
  scores = pj.snip_scores(mlp_loss, params, batches)
  assert _counts(inverted) == _counts(masks)
  for name in ("l1", "l2"):
    s, m = np.asarray(scores[name]["kernel"]), np.asarray(inverted[name]["kernel"])
    assert s[m].max() <= s[~m].min()


def test_invert_is_refused_for_iterative_methods():
  params = mlp_params(jax.random.PRNGKey(0))
  batches = make_batches(jax.random.PRNGKey(1), 1)
  with pytest.raises(ValueError, match="one-shot method.*'force' iterates"):
    pj.prune("force", params, 0.5, loss_fn=mlp_loss, batches=batches, invert=True)


def test_unknown_sanity_check_is_refused():
  with pytest.raises(ValueError, match="Unknown sanity check 'shufle'"):
    sanity.check_sanity_check("shufle")


def _find(check):
  config = test_config.get_config()
  config.prune.method = "magnitude"
  config.prune.sanity_check = check
  model = models.get_model(config.model, 10)
  variables = models.init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
  masks, meta = train.find_masks(prune_config.plan(config.prune), model, variables, (28, 28, 1),
                                 jax.random.PRNGKey(1))
  return variables["params"], masks, meta


def test_find_masks_applies_shuffle_and_invert_and_reports_connectivity():
  params, plain, meta = _find(None)
  _, shuffled, shuffled_meta = _find("shuffle")
  _, inverted, _ = _find("invert")
  assert _counts(shuffled) == _counts(plain) == _counts(inverted)
  assert not np.array_equal(shuffled["fc1"]["kernel"], plain["fc1"]["kernel"])
  size = np.abs(np.asarray(params["fc1"]["kernel"]))
  kept = np.asarray(inverted["fc1"]["kernel"])
  assert size[kept].max() <= size[~kept].min()  # magnitude inverted: the smallest weights
  # Magnitude's 90%-sparse LeNet-300-100 is well connected; the summary is the connectivity one.
  assert 0.0 < meta["connectivity"]["effective_density/total"] <= 0.1 + 1e-9
  assert meta["connectivity"]["empty_layers"] == []
  assert shuffled_meta["prune_seconds"] > 0


def test_reinit_trains_the_found_mask_from_a_fresh_initialization(tmp_path,
                                                                  fashion_mnist_data_dir):
  config = test_config.get_config()
  config.data_dir = fashion_mnist_data_dir
  config.prune.method = "magnitude"
  config.prune.sanity_check = "reinit"
  config.train.learning_rate = 0.0  # the trained params are the initial (masked) ones
  config.train.weight_decay = 0.0
  config.train.steps_per_epoch = 2
  train.train_and_evaluate(config, str(tmp_path))
  state = train.load_run(str(tmp_path))[2]

  model = models.get_model(config.model, 10)
  init_key = jax.random.split(jax.random.PRNGKey(config.seed))[0]
  found_on = models.init_variables(model, init_key, (28, 28, 1))["params"]
  fresh = models.init_variables(model, jax.random.fold_in(init_key, 1), (28, 28, 1))["params"]
  expected_masks = pj.prune("magnitude", found_on, config.prune.sparsity)
  jax.tree.map(np.testing.assert_array_equal, state.masks, expected_masks)
  jax.tree.map(np.testing.assert_array_equal, state.params,
               pj.apply_masks(fresh, expected_masks))
