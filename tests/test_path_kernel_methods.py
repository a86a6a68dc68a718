"""NTK-SAP and PX through `pj.prune` and the experiments: the registration's wiring.

Their scores against the authors' code are tested in tests/test_ntk_sap_px.py; here, that
`pj.prune` hands each method the model views its authors use (NTK-SAP: eval mode on calibrated
BatchNorm statistics; PX: activations recorded in eval mode, linear copies in the given mode)
and that a run of the experiment harness prunes with them.
"""

import functools

import jax
import numpy as np
import pytest

import prospr_jax as pj
from configs import test as test_config
from conftest import TinyBNCNN, make_batches, mlp_apply, mlp_params
from prospr_jax.adapters import LinenApply
from prospr_jax.experiment import train
from prospr_jax.saliency import ntk_sap, px
from prospr_jax.saliency.batch_statistics import LinenBatchStatistics
from prospr_jax.saliency.relu_rewrite import NoReluError
from prospr_jax.pure_models import LinenEvalApply

_SHAPE = (6, 6, 2)


def _bn_cnn():
  model = TinyBNCNN()
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, *_SHAPE), np.float32), train=False)
  return model, variables["params"], {"batch_stats": variables["batch_stats"]}


def _select(sparsity):
  return functools.partial(pj.masks_from_scores, min_kept_per_layer=1)


def _assert_same_masks(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_ntk_sap_through_prune_is_ntk_sap_on_calibrated_eval_statistics():
  model, params, state = _bn_cnn()
  key = jax.random.PRNGKey(3)
  options = dict(num_rounds=2, num_samples=2, batch_size=4)
  masks = pj.prune("ntk_sap", params, 0.7, apply_fn=LinenApply(model, state),
                   input_shape=_SHAPE, key=key, min_kept_per_layer=1, **options)
  direct = ntk_sap.ntk_sap_masks(
      LinenEvalApply(model), params, _SHAPE, 0.7, _select(0.7), key=key, state=state,
      calibrate_fn=LinenBatchStatistics(model), **options)
  _assert_same_masks(masks, direct)
  assert pj.density_summary(masks, params)["density/total"] == pytest.approx(0.3, abs=0.01)


def test_ntk_sap_on_a_plain_function_and_its_bad_batchnorm_mode():
  params = mlp_params(jax.random.PRNGKey(0))
  masks = pj.prune("ntk_sap", params, 0.5, apply_fn=mlp_apply, input_shape=(6,),
                   key=jax.random.PRNGKey(1), num_rounds=2, num_samples=1, batch_size=4)
  assert pj.density_summary(masks, params)["density/total"] == round(0.5 * 45) / 45  # 6x5 + 5x3
  model, params, state = _bn_cnn()
  with pytest.raises(ValueError, match="NTK-SAP scores with BatchNorm in eval mode"):
    pj.prune("ntk_sap", params, 0.5, apply_fn=LinenApply(model, state, bn_mode="train"),
             input_shape=_SHAPE, key=jax.random.PRNGKey(1), num_rounds=1)


def test_px_through_prune_records_in_eval_mode_and_copies_in_the_given_mode():
  model, params, state = _bn_cnn()
  batches = make_batches(jax.random.PRNGKey(2), 2, batch_size=4, shape=_SHAPE)
  masks = pj.prune("px", params, 0.6, apply_fn=LinenApply(model, state, bn_mode="train"),
                   batches=batches, num_rounds=3, min_kept_per_layer=1)
  direct = px.px_masks(LinenApply(model, state, bn_mode="eval"), params, batches, 0.6,
                       _select(0.6), copy_apply_fn=LinenApply(model, state, bn_mode="train"),
                       num_rounds=3)
  _assert_same_masks(masks, direct)


def test_px_refuses_a_model_without_relus():
  params = mlp_params(jax.random.PRNGKey(0))  # a tanh MLP: no activation pattern to record
  batches = make_batches(jax.random.PRNGKey(1), 1)
  with pytest.raises(NoReluError):
    pj.prune("px", params, 0.5, apply_fn=mlp_apply, batches=batches, num_rounds=1)


@pytest.mark.parametrize("method, fields", [
    ("ntk_sap", {"ntk_sap_rounds": 2, "ntk_sap_samples": 1}),
    ("px", {"px_rounds": 2}),
])
def test_a_run_of_the_harness_prunes_with_them(tmp_path, fashion_mnist_data_dir, method, fields):
  config = test_config.get_config()
  config.data_dir = fashion_mnist_data_dir
  config.prune.method = method
  config.prune.update(fields)
  config.train.steps_per_epoch = 2
  results = train.train_and_evaluate(config, str(tmp_path / method))
  assert results["density"]["density/total"] == pytest.approx(0.1, abs=1e-4)
  assert results["config"]["prune"]["method"] == method
