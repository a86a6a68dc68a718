"""The BatchNorm mode while scoring: `LinenLoss`/`LinenApply(bn_mode=...)`, the authors' modes in
the registry, and `config.prune.batchnorm_mode` in `train.prune_at_init`."""

import jax
import numpy as np
import optax
import pytest

import prospr_jax as pj
from configs import test as test_config
from conftest import TinyBNCNN, make_batches
from prospr_jax import models, structured
from prospr_jax.experiment import prune_config, train
from prospr_jax.adapters import LinenApply, LinenLoss
from prospr_jax.saliency import registry


@pytest.fixture(scope="module")
def variables():
  return models.init_variables(TinyBNCNN(), jax.random.PRNGKey(0), (6, 6, 2))


@pytest.fixture(scope="module")
def setup(variables):
  """A BatchNorm CNN, its params, its state and a batch."""
  # Running statistics far from the batch's, so that the two modes differ.
  stats = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])
  (batch,) = make_batches(jax.random.PRNGKey(1), 1, batch_size=4, shape=(6, 6, 2))
  return TinyBNCNN(), variables["params"], {"batch_stats": stats}, batch


def test_eval_mode_normalizes_with_the_running_statistics_and_keeps_the_state(setup):
  model, params, state, batch = setup
  loss, new_state = LinenLoss(model, bn_mode="eval")(params, state, batch)
  logits = model.apply({"params": params, **state}, batch["image"], train=False)
  expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert new_state is state
  np.testing.assert_allclose(LinenApply(model, state)(params, batch["image"]), logits, rtol=1e-6)


def test_train_mode_normalizes_with_the_batch_statistics_and_returns_new_statistics(setup):
  model, params, state, batch = setup
  loss, new_state = LinenLoss(model, bn_mode="train")(params, state, batch)
  logits, updates = model.apply({"params": params, **state}, batch["image"], train=True,
                                mutable=["batch_stats"])
  expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, new_state, updates)
  eval_loss, _ = LinenLoss(model, bn_mode="eval")(params, state, batch)
  assert abs(float(loss) - float(eval_loss)) > 1e-3
  np.testing.assert_allclose(LinenApply(model, state, bn_mode="train")(params, batch["image"]),
                             logits, rtol=1e-6)


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match="Unknown BatchNorm mode 'inference'"):
    LinenLoss(TinyBNCNN(), bn_mode="inference")
  with pytest.raises(ValueError, match="Unknown BatchNorm mode"):
    LinenApply(TinyBNCNN(), {}, bn_mode="test")


def test_registry_records_each_methods_authors_mode():
  modes = {name: method.batchnorm_mode for name, method in pj.METHODS.items()}
  assert modes == {"prospr": "train", "prospr_first_order": "train", "snip": "eval",
                   "grasp": "train", "iterative_snip": "train", "force": "train",
                   "synflow": "eval", "magnitude": None, "random": None, "ntk_sap": "eval",
                   "px": "train"}


@pytest.mark.parametrize("method, structured_, override, expected", [
    ("snip", False, None, "eval"),
    ("snip", False, "train", "train"),
    ("snip", True, None, "eval"),
    ("prospr", False, None, "train"),
    ("prospr", True, "eval", "eval"),
    ("synflow", False, None, "eval"),
])
def test_prune_at_init_scores_in_the_configured_mode(monkeypatch, variables, method, structured_,
                                                      override, expected):
  """The loss (or SynFlow's apply_fn) handed to the method runs BatchNorm in `expected`."""
  seen = {}

  def capture(*args, **kwargs):
    seen.update(kwargs)
    return {}

  monkeypatch.setattr(registry, "prune", capture)
  monkeypatch.setattr(structured, "structured_prune", capture)
  config = test_config.get_config()
  config.prune.update(method=method, structured=structured_, batchnorm_mode=override,
                      batch_size=4)
  plan = prune_config.plan(config.prune)
  batches = make_batches(jax.random.PRNGKey(1), plan.num_batches, batch_size=4, shape=(6, 6, 2))
  train.prune_at_init(plan, TinyBNCNN(), variables, (6, 6, 2), jax.random.PRNGKey(2), batches)
  scorer = seen["apply_fn"] if method == "synflow" else seen["loss_fn"]
  assert scorer.bn_mode == expected


def test_a_bad_configured_mode_is_an_error():
  config = test_config.get_config()
  config.prune.batchnorm_mode = "inference"
  with pytest.raises(ValueError, match="Unknown BatchNorm mode 'inference'"):
    prune_config.scoring_batchnorm_mode(config.prune)
  config.prune.update(method="magnitude", batchnorm_mode=None)
  assert prune_config.scoring_batchnorm_mode(config.prune) is None


def test_snip_masks_depend_on_the_mode_on_a_batchnorm_net(setup):
  """Why the mode matters: SNIP's masks of a BatchNorm CNN differ between the two modes."""
  model, params, state, batch = setup
  masks = {mode: pj.prune("snip", params, 0.8, loss_fn=LinenLoss(model, bn_mode=mode),
                          batches=[batch], state=state) for mode in ("train", "eval")}
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(masks["train"]), jax.tree.leaves(masks["eval"])))
