"""ProsPr meta-gradients checked against finite differences, closed forms and SNIP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prospr_jax as pj
from configs import default as default_config
from conftest import TinyBNCNN, make_batches, mlp_loss, mlp_params
from prospr_jax import masks as masks_lib
from prospr_jax import models
from prospr_jax.adapters import LinenLoss
from prospr_jax.saliency import objective, prospr, snip

OPTIMIZERS = {
    "sgd": optax.sgd(0.1),
    "momentum": optax.sgd(0.1, momentum=0.9),
    # eps_root keeps d sqrt(v)/dv finite where a gradient is exactly zero (optax's advice
    # for meta-gradients through Adam).
    "adam": optax.adam(0.05, eps_root=1e-12),
}


@pytest.fixture(params=[True, 1, 2], ids=["unrolled", "scan", "scan_unroll2"])
def unroll(request):
  """The inner loop's form: a Python loop unrolled at trace time, or a `lax.scan` unrolling
  one or two steps per iteration."""
  return request.param


def _central_differences(f, c, num_entries, key, eps=1e-6):
  """Central differences of scalar `f(c)` along `num_entries` random coordinates of `c`."""
  flat, unravel = jax.flatten_util.ravel_pytree(c)
  idx = np.asarray(jax.random.choice(key, flat.size, (num_entries,), replace=False))
  out = []
  for i in idx:
    e = jnp.zeros_like(flat).at[i].set(eps)
    out.append((f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * eps))
  return idx, np.asarray(out)


def _check_against_fd(loss_fn, params, state, batches, optimizer, key, unroll):
  c = masks_lib.ones_masks(params)
  # The k-step loss itself, compiled once (op-by-op it dominated the test's time).
  f = jax.jit(lambda c_: prospr.k_step_loss(c_, params=params, state=state, batches=batches,
                                            loss_fn=loss_fn, optimizer=optimizer,
                                            unroll=unroll))
  grad = prospr.meta_gradient(c, params, state, batches, loss_fn=loss_fn, optimizer=optimizer,
                              unroll=unroll)
  flat_grad = jax.flatten_util.ravel_pytree(grad)[0]
  idx, fd = _central_differences(f, c, 12, key)
  np.testing.assert_allclose(flat_grad[idx], fd, rtol=1e-5, atol=1e-9)
  return grad


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_meta_gradient_matches_finite_differences_mlp(x64, opt_name, unroll):
  key = jax.random.PRNGKey(0)
  params = mlp_params(key, dtype=jnp.float64)
  batches = make_batches(jax.random.PRNGKey(1), 4, dtype=jnp.float64)
  loss_fn, state = objective.with_state(mlp_loss, None)
  _check_against_fd(loss_fn, params, state, batches, OPTIMIZERS[opt_name], key, unroll)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_meta_gradient_matches_finite_differences_bn_cnn(x64, opt_name, unroll):
  model = TinyBNCNN()
  batches = make_batches(jax.random.PRNGKey(2), 3, batch_size=4, shape=(6, 6, 2),
                         dtype=jnp.float64)
  variables = models.init_variables(model, jax.random.PRNGKey(3), (6, 6, 2))
  variables = jax.tree.map(lambda v: v.astype(jnp.float64), variables)
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  before = jax.tree.map(np.asarray, state)
  _check_against_fd(LinenLoss(model), params, state, batches, OPTIMIZERS[opt_name],
                    jax.random.PRNGKey(4), unroll)
  # The caller's BatchNorm statistics are untouched.
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state))


def test_meta_gradient_equals_closed_form_linear_regression(x64, unroll):
  """L(w; X, y) = |Xw - y|^2 / 2n, SGD with rate lr: w_k = M (c * w0) + const with
  M = prod_i (I - lr A_i), A_i = X_i^T X_i / n, so dL/dc = w0 * M^T (A_k w_k - X_k^T y_k / n)."""
  rng = np.random.default_rng(0)
  d, n, k, lr = 5, 7, 3, 0.05
  w0 = rng.normal(size=(d, 1))
  data = [(rng.normal(size=(n, d)), rng.normal(size=(n, 1))) for _ in range(k + 1)]
  batches = [{"x": jnp.asarray(x), "y": jnp.asarray(y)} for x, y in data]

  def loss(params, batch):
    r = batch["x"] @ params["w"] - batch["y"]
    return 0.5 * jnp.mean(r**2)

  grad = prospr.meta_gradient(
      masks_lib.ones_masks({"w": jnp.asarray(w0)}), {"w": jnp.asarray(w0)}, {}, batches,
      loss_fn=objective.with_state(loss, None)[0], optimizer=optax.sgd(lr), unroll=unroll,
  )["w"]

  w, m = w0.copy(), np.eye(d)
  for x, y in data[:k]:
    a = x.T @ x / n
    w = w - lr * (a @ w - x.T @ y / n)
    m = (np.eye(d) - lr * a) @ m
  xk, yk = data[k]
  expected = w0 * (m.T @ (xk.T @ xk / n @ w - xk.T @ yk / n))
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-10)


def test_zero_steps_equals_snip(x64, unroll):
  # float64, so that |∂L/∂c| and |θ ⊙ ∇θL| (different roundings in float32) agree to 1e-12.
  params = mlp_params(jax.random.PRNGKey(0), dtype=jnp.float64)
  (batch,) = make_batches(jax.random.PRNGKey(1), 1, dtype=jnp.float64)
  got = prospr.prospr_scores(mlp_loss, params, [batch], num_steps=0, unroll=unroll)
  expected = snip.snip_scores(mlp_loss, params, batch)
  # SNIP is computed independently as |θ ⊙ ∇θL|.
  manual = jax.tree.map(lambda p, g: jnp.abs(p * g), params, jax.grad(mlp_loss)(params, batch))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-12), got, expected)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-12), got, manual)


def test_first_order_equals_init_times_gradient_at_theta_k(unroll):
  params = mlp_params(jax.random.PRNGKey(0))
  batches = make_batches(jax.random.PRNGKey(1), 4)
  opt = optax.sgd(0.1, momentum=0.9)
  got = prospr.prospr_scores(mlp_loss, params, batches, num_steps=3, optimizer=opt,
                             first_order=True, unroll=unroll)
  theta, opt_state = params, opt.init(params)
  for b in batches[:3]:
    updates, opt_state = opt.update(jax.grad(mlp_loss)(theta, b), opt_state, theta)
    theta = optax.apply_updates(theta, updates)
  expected = jax.tree.map(lambda p0, g: jnp.abs(p0 * g), params,
                          jax.grad(mlp_loss)(theta, batches[3]))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-8), got,
               expected)
  full = prospr.prospr_scores(mlp_loss, params, batches, num_steps=3, optimizer=opt)
  assert not np.allclose(full["l1"]["kernel"], got["l1"]["kernel"])


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_remat_gives_the_same_meta_gradient(x64, opt_name, unroll):
  params = mlp_params(jax.random.PRNGKey(0), dtype=jnp.float64)
  batches = make_batches(jax.random.PRNGKey(1), 5, dtype=jnp.float64)
  optimizer = OPTIMIZERS[opt_name]
  plain = prospr.prospr_scores(mlp_loss, params, batches, num_steps=4, optimizer=optimizer)
  remat = prospr.prospr_scores(mlp_loss, params, batches, num_steps=4, optimizer=optimizer,
                               remat=True, unroll=unroll)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-10), plain, remat)


def test_fusion_barrier_returns_its_input_and_stays_in_the_cpu_program():
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "count": jnp.int32(7)}
  f = jax.jit(lambda t: prospr.fusion_barrier(jax.tree.map(lambda x: x * 2, t),
                                              0.0 * t["w"][0, 0]))
  jax.tree.map(np.testing.assert_array_equal, f(tree), jax.tree.map(lambda x: x * 2, tree))
  assert jax.tree.map(lambda x: x.dtype, f(tree)) == jax.tree.map(lambda x: x.dtype, tree)
  if jax.default_backend() == "cpu":
    assert " conditional(" in f.lower(tree).compile().as_text()


def test_single_batch_is_reused_for_every_step():
  params = mlp_params(jax.random.PRNGKey(0))
  (batch,) = make_batches(jax.random.PRNGKey(1), 1)
  once = prospr.prospr_scores(mlp_loss, params, batch, num_steps=2)
  repeated = prospr.prospr_scores(mlp_loss, params, [batch] * 3, num_steps=2)
  jax.tree.map(np.testing.assert_array_equal, once, repeated)


def test_wrong_number_of_batches_is_an_error():
  params = mlp_params(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="needs 4 batches"):
    prospr.prospr_scores(mlp_loss, params, make_batches(jax.random.PRNGKey(1), 2), num_steps=3)


def _compiled_peak_bytes(num_steps, remat, model, variables, batch, unroll):
  """Argument + output + temp bytes of the compiled meta-gradient (XLA's memory analysis)."""
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  compiled = prospr.meta_gradient.lower(
      masks_lib.ones_masks(params), params, state, [batch] * (num_steps + 1),
      loss_fn=LinenLoss(model), remat=remat, unroll=unroll).compile()
  mem = compiled.memory_analysis()
  return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)


def test_remat_keeps_memory_nearly_flat_in_k(unroll):
  model = TinyBNCNN()
  (batch,) = make_batches(jax.random.PRNGKey(2), 1, batch_size=64, shape=(16, 16, 2))
  variables = models.init_variables(model, jax.random.PRNGKey(3), (16, 16, 2))
  peak = {(k, r): _compiled_peak_bytes(k, r, model, variables, batch, unroll)
          for k in (1, 8) for r in (False, True)}
  assert peak[8, False] > 3 * peak[1, False]  # activations of every step are stored
  # With remat only each step's inputs (params, optimizer state, batch) are stored.
  growth, growth_without = peak[8, True] - peak[1, True], peak[8, False] - peak[1, False]
  assert growth < 0.2 * growth_without, peak


def _wide_mlp_case():
  """Params that dominate memory (a wide MLP, a tiny batch), its loss, and one batch."""
  params = {"w1": jnp.full((256, 512), 0.01), "w2": jnp.full((512, 10), 0.01)}
  batch = {"x": jnp.ones((8, 256)), "y": jnp.ones((8, 10))}

  def loss_fn(params, state, batch):
    prediction = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]
    return jnp.mean((prediction - batch["y"]) ** 2), state

  return params, loss_fn, batch


def _remat_adam_peak_bytes(num_steps: int, unroll) -> int:
  """Compiled peak bytes of the wide MLP's meta-gradient with Adam and remat."""
  params, loss_fn, batch = _wide_mlp_case()
  compiled = prospr.meta_gradient.lower(
      masks_lib.ones_masks(params), params, {}, [batch] * (num_steps + 1), loss_fn=loss_fn,
      optimizer=optax.adam(1e-3), remat=True, unroll=unroll).compile()
  mem = compiled.memory_analysis()
  return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)


def test_remat_stores_one_copy_of_params_and_optimizer_state_per_step():
  # Unrolled, remat's growth per inner step is its stored inputs, params plus Adam's two
  # moments (3x the params' bytes), and nothing more. Without `fusion_barrier` XLA:CPU kept
  # 6x the params' bytes per step (measured).
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(_wide_mlp_case()[0]))
  growth_per_step = (_remat_adam_peak_bytes(9, True) - _remat_adam_peak_bytes(1, True)) / 8
  assert growth_per_step < 3.5 * params_bytes, growth_per_step / params_bytes


def test_remat_in_a_scan_stores_about_two_sqrt_k_carries():
  # The scan's steps run in sqrt(k) blocks whose carries are recomputed: from k = 4 to 64,
  # about 2 (8 - 2) = 12 more carries (params + Adam's moments, 3x the params' bytes each) are
  # stored, 36x the params' bytes (measured 37x). One carry per step, as unrolled, would be
  # 180x (measured before the blocks: 181x).
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(_wide_mlp_case()[0]))
  growth = _remat_adam_peak_bytes(64, 1) - _remat_adam_peak_bytes(4, 1)
  assert growth < 60 * params_bytes, growth / params_bytes


def test_the_scan_gives_the_unrolled_scores_on_a_bn_cnn():
  """Float32, BatchNorm state threaded through the steps, momentum: the scan's scores are the
  unrolled loop's to float rounding (1e-6 of each leaf's largest score)."""
  model = TinyBNCNN()
  batches = make_batches(jax.random.PRNGKey(2), 6, batch_size=8, shape=(8, 8, 2))
  variables = models.init_variables(model, jax.random.PRNGKey(3), (8, 8, 2))
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  scores = {unroll: prospr.prospr_scores(LinenLoss(model), params, batches, state=state,
                                         num_steps=5, optimizer=OPTIMIZERS["momentum"],
                                         unroll=unroll)
            for unroll in (True, 1, 2)}
  for unroll in (1, 2):
    jax.tree.map(lambda got, want: np.testing.assert_allclose(
        got, want, rtol=0, atol=1e-6 * float(jnp.abs(want).max())), scores[unroll], scores[True])


def test_default_unroll_is_a_scan_off_cpu_and_above_the_cpu_threshold(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert prospr.default_unroll(prospr.CPU_UNROLLED_MAX_STEPS) is True
  assert prospr.default_unroll(prospr.CPU_UNROLLED_MAX_STEPS + 1) == 1
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert prospr.default_unroll(1) == 1


@pytest.mark.parametrize("num_steps, error", [(1.5, TypeError), (True, TypeError),
                                               ("3", TypeError), (-1, ValueError)])
def test_bad_num_steps_is_an_error(num_steps, error):
  params = mlp_params(jax.random.PRNGKey(0))
  (batch,) = make_batches(jax.random.PRNGKey(1), 1)
  with pytest.raises(error, match="num_steps"):
    prospr.prospr_scores(mlp_loss, params, batch, num_steps=num_steps)


@pytest.mark.parametrize("unroll, error", [(0, ValueError), (False, TypeError),
                                           (1.0, TypeError), ("scan", TypeError)])
def test_bad_unroll_is_an_error(unroll, error):
  params = mlp_params(jax.random.PRNGKey(0))
  (batch,) = make_batches(jax.random.PRNGKey(1), 1)
  with pytest.raises(error, match="unroll"):
    prospr.prospr_scores(mlp_loss, params, batch, num_steps=2, unroll=unroll)


def test_pruning_again_with_new_params_and_an_equal_setup_compiles_nothing():
  """A second `prune` with new params of the same shapes, a new `LinenLoss` of an equal model
  and the inner optimizer built again from the same config reuses every compiled program."""
  config = default_config.get_config().prune
  optimizer_option = pj.METHODS["prospr"].options["optimizer"]
  model = TinyBNCNN()
  (batch,) = make_batches(jax.random.PRNGKey(2), 1, batch_size=8, shape=(8, 8, 2))

  def prune_fresh(seed):
    variables = models.init_variables(TinyBNCNN(), jax.random.PRNGKey(seed), (8, 8, 2))
    return lambda: pj.prune(
        "prospr", variables["params"], 0.9, loss_fn=LinenLoss(TinyBNCNN()), batches=batch,
        state={"batch_stats": variables["batch_stats"]}, num_steps=2,
        optimizer=optimizer_option.value(config))

  assert LinenLoss(model) == LinenLoss(TinyBNCNN())
  jax.block_until_ready(prune_fresh(0)())
  compiled_programs = prospr.meta_gradient._cache_size()
  second = prune_fresh(1)  # initializing compiles nothing new either, but is not counted
  compiles = []

  def count_compiles(event, duration_s, **kwargs):
    del duration_s, kwargs
    if event.endswith("backend_compile_duration"):
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(count_compiles)
  try:
    jax.block_until_ready(second())
  finally:
    jax.monitoring.unregister_event_duration_listener(count_compiles)
  assert prospr.meta_gradient._cache_size() == compiled_programs
  assert not compiles, compiles


def test_the_config_sets_the_inner_loop_form():
  config = default_config.get_config().prune
  unroll_option = pj.METHODS["prospr"].options["unroll"]
  assert unroll_option.value(config) is None  # left out: default_unroll applies
  config.unroll = 2
  assert unroll_option.value(config) == 2
