"""`prune`: the method registry, clear errors, and use from plain JAX, Flax linen and NNX."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import prospr_jax as pj
from conftest import TinyBNCNN, make_batches, mlp_loss, mlp_params
from prospr_jax import models
from prospr_jax.adapters import LinenLoss


def test_registry_lists_every_method():
  assert set(pj.METHODS) == {"prospr", "prospr_first_order", "snip", "grasp", "synflow",
                             "iterative_snip", "force", "magnitude", "random", "ntk_sap", "px"}


def test_unknown_method_is_an_error_listing_the_valid_ones():
  with pytest.raises(ValueError, match="Unknown pruning method 'prospy'.*'prospr'"):
    pj.prune("prospy", mlp_params(jax.random.PRNGKey(0)), 0.5)


def test_missing_inputs_are_named():
  with pytest.raises(ValueError, match=r"'prospr' needs \['loss_fn', 'batches'\]"):
    pj.prune("prospr", mlp_params(jax.random.PRNGKey(0)), 0.5)
  with pytest.raises(ValueError, match=r"'random' needs \['key'\]"):
    pj.prune("random", mlp_params(jax.random.PRNGKey(0)), 0.5)


def test_structured_mode_points_to_structured_prune():
  """The per-kernel, uncoupled `prune(..., structured=True)` is gone: one way to prune channels."""
  with pytest.raises(TypeError, match=r"no structured mode.*prospr_jax\.structured_prune"):
    pj.prune("magnitude", mlp_params(jax.random.PRNGKey(0)), 0.5, structured=True)


def test_bad_sparsity_fails_before_scoring():
  with pytest.raises(ValueError, match="outside"):
    pj.prune("prospr", mlp_params(jax.random.PRNGKey(0)), 1.0, loss_fn=mlp_loss,
             batches=make_batches(jax.random.PRNGKey(1), 4))


@pytest.mark.parametrize("method, options, accepted", [
    ("snip", {"num_stepz": 3}, "it takes no options"),
    ("prospr", {"num_stepz": 3},
     r"its options are \['num_steps', 'optimizer', 'remat', 'unroll'\]"),
    ("synflow", {"num_steps": 3, "float64": True}, r"its options are \['float64', 'num_rounds'\]"),
])
def test_unknown_option_names_the_accepted_ones(method, options, accepted):
  with pytest.raises(ValueError, match=rf"Method '{method}' has no option\(s\) \['num_step[sz]'\]: "
                                       + accepted):
    pj.prune(method, mlp_params(jax.random.PRNGKey(0)), 0.5, loss_fn=mlp_loss,
             batches=make_batches(jax.random.PRNGKey(1), 1), apply_fn=lambda p, x: x,
             input_shape=(6,), **options)


@pytest.mark.parametrize("sparsity", ["0.9", None, True, [0.9]])
def test_non_numeric_sparsity_is_a_type_error(sparsity):
  with pytest.raises(TypeError, match=r"sparsity must be a number in \[0, 1\).*got "
                                      + re.escape(repr(sparsity))):
    pj.prune("magnitude", mlp_params(jax.random.PRNGKey(0)), sparsity)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_boolean_params_are_refused(dtype):
  params = mlp_params(jax.random.PRNGKey(0))
  params["l2"]["kernel"] = jnp.ones((5, 3), dtype)
  name = jnp.dtype(dtype).name
  with pytest.raises(TypeError, match=rf"not floating point: 'l2/kernel' \({name}\)"):
    pj.prune("magnitude", params, 0.5)


def test_nan_scores_from_a_diverging_inner_loop_are_an_error():
  params = {"w": jnp.ones((3, 2))}
  square_loss = lambda p, b: jnp.mean((b["image"] @ p["w"]) ** 2)
  with pytest.raises(ValueError, match="NaN or inf"):
    pj.prune("prospr", params, 0.5, loss_fn=square_loss,
             batches=[{"image": jnp.ones((2, 3))}], optimizer=optax.sgd(1e30))


def test_linen_model_with_batchnorm_state_is_not_modified():
  model = TinyBNCNN()
  batches = make_batches(jax.random.PRNGKey(2), 4, batch_size=4, shape=(6, 6, 2))
  variables = models.init_variables(model, jax.random.PRNGKey(3), (6, 6, 2))
  state = {"batch_stats": variables["batch_stats"]}
  before = jax.tree.map(np.array, state)
  masks = pj.prune("prospr", variables["params"], 0.9, loss_fn=LinenLoss(model),
                   batches=batches, state=state)
  jax.tree.map(np.testing.assert_array_equal, before, state)
  summary = pj.density_summary(masks, variables["params"])
  n = 3 * 3 * 2 * 4 + 3 * 3 * 4 * 4 + 4 * 3
  assert summary["density/total"] == round(0.1 * n) / n


def test_flax_nnx_model_through_split_and_merge():
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(6, 5, rngs=rngs)
      self.l2 = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  model = MLP(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p, batch):
    logits = nnx.merge(graphdef, p)(batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  masks = pj.prune("prospr", params, 0.8, loss_fn=loss_fn,
                   batches=make_batches(jax.random.PRNGKey(1), 4))
  assert jax.tree.structure(masks) == jax.tree.structure(params)
  nnx.update(model, pj.apply_masks(params, masks))
  kernel = np.asarray(model.l1.kernel[...])
  np.testing.assert_array_equal(kernel == 0, ~np.asarray(masks["l1"]["kernel"][...]))
  assert 0 < np.count_nonzero(kernel) < kernel.size
