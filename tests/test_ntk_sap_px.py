"""NTK-SAP and PX: against their authors' PyTorch code, and against closed forms.

`tests/reference/make_ntk_sap_px_fixtures.py` (run by hand with torch; its docstring names the
upstream commits) stored, in float64, a BatchNorm CNN and a ReLU MLP, NTK-SAP's random draws,
PX's batches, and the authors' scores and masks of every round. Here the CNN is the linen
`RefCNN` (with `LinenBatchStatistics` for NTK-SAP's BatchNorm calibration) and the MLP a plain
function; scores agree to 1e-5 relative every round, masks exactly. Only numpy reads the
fixture: no torch here.
"""

from __future__ import annotations

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prospr_jax import masks as masks_lib
from prospr_jax.adapters import LinenApply
from prospr_jax.models.convnet import SmallConvNet
from prospr_jax.saliency import batch_statistics, ntk_sap, px, relu_rewrite
from prospr_jax.pure_models import FunctionApply, LinenEvalApply, as_pure_model
from prospr_jax.tree_types import PyTree
from test_reference_fixtures import RefCNN

FIXTURE = pathlib.Path(__file__).parent / "reference" / "ntk_sap_px.npz"
MODELS = ("cnn", "mlp")
ROUNDS = (1, 2, 3)


def relu_mlp(params: PyTree, x: jax.Array) -> jax.Array:
  """The fixture's MLP: lin1 -> relu -> lin2 -> relu -> fc."""
  for name in ("lin1", "lin2"):
    x = jax.nn.relu(x @ params[name]["kernel"] + params[name]["bias"])
  return x @ params["fc"]["kernel"] + params["fc"]["bias"]


@functools.cache
def _arrays() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as data:
    return {k: data[k] for k in data.files}


def _stored(prefix: str) -> dict[str, np.ndarray]:
  """`{torch name: array}` stored directly under `prefix/`."""
  return {k[len(prefix) + 1:]: v for k, v in _arrays().items()
          if k.startswith(prefix + "/") and "/" not in k[len(prefix) + 1:]}


def _to_flax(w: np.ndarray) -> np.ndarray:
  """torch layout -> Flax, also for draws stacked on leading axes: conv OIHW -> HWIO,
  linear [out, in] -> [in, out]."""
  lead = w.ndim - 4 if w.ndim >= 4 else w.ndim - 2
  axes = tuple(range(lead))
  if w.ndim - lead == 4:
    return w.transpose(*axes, lead + 2, lead + 3, lead + 1, lead)
  return w.transpose(*axes, lead + 1, lead)


def _image(x: np.ndarray) -> np.ndarray:
  """Inputs NCHW -> NHWC (with any leading axes); vectors as they are."""
  return np.moveaxis(x, -3, -1) if x.ndim >= 4 else x


def _params(weights: dict[str, np.ndarray]) -> tuple[PyTree, PyTree]:
  """Flax `(params, state)` from torch-named weights."""
  params: dict = {}
  stats: dict = {}
  for name, w in weights.items():
    layer, leaf = name.split(".")
    if leaf.startswith("running_"):
      stats.setdefault(layer, {})[leaf.removeprefix("running_")] = jnp.asarray(w)
    elif layer.startswith("bn"):
      params.setdefault(layer, {})["scale" if leaf == "weight" else "bias"] = jnp.asarray(w)
    else:
      params.setdefault(layer, {})["kernel" if leaf == "weight" else "bias"] = jnp.asarray(
          _to_flax(w) if leaf == "weight" else w)
  return params, ({"batch_stats": stats} if stats else {})


def _kernels(tree: PyTree) -> dict[str, np.ndarray]:
  """The kernels of a params-like pytree, in torch layout, keyed 'conv1.weight'."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if path[-1].key == "kernel":
      x = np.asarray(x)
      out[f"{path[0].key}.weight"] = (x.transpose(3, 2, 0, 1) if x.ndim == 4 else x.T)
  return out


def _masks(params: PyTree, stored: dict[str, np.ndarray] | None) -> PyTree:
  """Stored torch masks as a bool tree like `params` (all True where nothing is stored)."""

  def leaf(path, p):
    name = f"{path[0].key}.weight"
    if stored is None or path[-1].key != "kernel":
      return jnp.ones(p.shape, bool)
    return jnp.asarray(_to_flax(stored[name]).astype(bool))

  return jax.tree_util.tree_map_with_path(leaf, params)


def _round_masks(model: str, method: str, t: int, params: PyTree) -> PyTree:
  """The authors' masks before round t (all ones before round 1)."""
  return _masks(params, _stored(f"{model}/{method}/round/{t - 1}/mask") if t > 1 else None)


def _assert_close(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
  """1e-5 relative; 1e-9 of the largest |score| absolute, for exact zeros."""
  assert ours.keys() == theirs.keys()
  scale = max(np.abs(v).max() for v in theirs.values())
  for name in theirs:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-9 * scale,
                               err_msg=name)


class RecordingSelect:
  """`masks_from_scores` that keeps the masks of every round."""

  def __init__(self):
    self.rounds: list[PyTree] = []

  def __call__(self, scores, sparsity, eligible=None):
    masks = masks_lib.masks_from_scores(scores, sparsity, eligible=eligible)
    self.rounds.append(masks)
    return masks


def _assert_rounds_match(select: RecordingSelect, model: str, method: str) -> None:
  assert len(select.rounds) == int(_arrays()[f"{model}/{method}/rounds"])
  for t, masks in enumerate(select.rounds, 1):
    theirs = _stored(f"{model}/{method}/round/{t}/mask")
    ours = _kernels(masks)
    assert ours.keys() == theirs.keys()
    for name in theirs:
      np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"round {t} {name}")


# --- NTK-SAP against YiteWang/NTK-SAP. -------------------------------------------------------

def _ntk_sap_setup(model: str):
  """`(params, state, apply_fn, calibrate_fn)` of the NTK-SAP fixture's model."""
  params, state = _params(_stored(f"{model}/ntk_sap_weights"))
  if model == "cnn":
    return params, state, LinenEvalApply(RefCNN()), batch_statistics.LinenBatchStatistics(
        RefCNN())
  return params, state, FunctionApply(relu_mlp), None


def _ntk_sap_draws(model: str, t: int, params: PyTree) -> ntk_sap.NtkSapDraws:
  """The stored draws of round t: kernels re-drawn, biases and BatchNorm as in `params`."""
  prefix = f"{model}/ntk_sap/round/{t}"
  kernels = _stored(f"{prefix}/weight")
  deltas = _stored(f"{prefix}/delta")
  num = next(iter(kernels.values())).shape[0]

  def stacked(path, p, source):
    if path[-1].key == "kernel":
      return jnp.asarray(_to_flax(source[f"{path[0].key}.weight"]))
    return jnp.broadcast_to(p if source is kernels else jnp.zeros_like(p), (num, *p.shape))

  return ntk_sap.NtkSapDraws(
      jax.tree_util.tree_map_with_path(lambda pa, p: stacked(pa, p, kernels), params),
      jnp.asarray(_image(_arrays()[f"{prefix}/input"])),
      jax.tree_util.tree_map_with_path(lambda pa, p: stacked(pa, p, deltas), params),
  )


@pytest.mark.parametrize("t", ROUNDS)
@pytest.mark.parametrize("model", MODELS)
def test_ntk_sap_scores_match_authors(x64, model, t):
  params, state, apply_fn, calibrate_fn = _ntk_sap_setup(model)
  scores = ntk_sap.ntk_sap_scores(
      _ntk_sap_draws(model, t, params), _round_masks(model, "ntk_sap", t, params), state,
      float(_arrays()[f"{model}/ntk_sap/epsilon"]), apply_fn=apply_fn,
      calibrate_fn=calibrate_fn)
  _assert_close(_kernels(scores), _stored(f"{model}/ntk_sap/round/{t}/score"))


@pytest.mark.parametrize("model", MODELS)
def test_ntk_sap_masks_match_authors_every_round(x64, model):
  params, state, apply_fn, calibrate_fn = _ntk_sap_setup(model)
  arrays = _arrays()
  select = RecordingSelect()
  ntk_sap.ntk_sap_masks(
      apply_fn, params, (), float(arrays[f"{model}/ntk_sap/sparsity"]), select, state=state,
      calibrate_fn=calibrate_fn, num_rounds=int(arrays[f"{model}/ntk_sap/rounds"]),
      epsilon=float(arrays[f"{model}/ntk_sap/epsilon"]),
      round_draws=lambda t: _ntk_sap_draws(model, t + 1, params))
  _assert_rounds_match(select, model, "ntk_sap")


def test_ntk_sap_scores_of_a_linear_model_have_a_closed_form(x64):
  """f(x; W) = x W: the output gap is ε²||x (c ⊙ Δ)||², so at c = 1 the score is
  |2 ε² (xᵀ x Δ) ⊙ Δ|, whatever W."""
  kw, kx, kd = jax.random.split(jax.random.key(0), 3)
  w = jax.random.normal(kw, (1, 5, 3), jnp.float64)
  x = jax.random.normal(kx, (1, 7, 5), jnp.float64)
  delta = jax.random.normal(kd, (1, 5, 3), jnp.float64)
  eps = 0.3
  scores = ntk_sap.ntk_sap_scores(
      ntk_sap.NtkSapDraws({"w": w}, x, {"w": delta}), {"w": jnp.ones((5, 3), bool)}, {}, eps,
      apply_fn=FunctionApply(lambda p, x: x @ p["w"]), calibrate_fn=None)
  expected = jnp.abs(2 * eps**2 * (x[0].T @ x[0] @ delta[0]) * delta[0])
  np.testing.assert_allclose(scores["w"], expected, rtol=1e-12)


def test_ntk_sap_scores_sum_over_draws_before_the_absolute_value(x64):
  """Two draws with opposite perturbation signs give gradients of the same sign (the gap is
  quadratic in Δ): the score of both is the sum of each one's."""
  kw, kx, kd = jax.random.split(jax.random.key(1), 3)
  w = jax.random.normal(kw, (4, 2), jnp.float64)
  x = jax.random.normal(kx, (3, 4), jnp.float64)
  d = jax.random.normal(kd, (4, 2), jnp.float64)
  score = functools.partial(ntk_sap.ntk_sap_scores, masks={"w": jnp.ones((4, 2))}, state={},
                            epsilon=0.1, apply_fn=FunctionApply(lambda p, x: x @ p["w"]),
                            calibrate_fn=None)
  one = score(ntk_sap.NtkSapDraws({"w": w[None]}, x[None], {"w": d[None]}))
  both = score(ntk_sap.NtkSapDraws({"w": jnp.stack([w, w])}, jnp.stack([x, x]),
                                   {"w": jnp.stack([d, -d])}))
  np.testing.assert_allclose(both["w"], 2 * one["w"], rtol=1e-12)


def test_ntk_sap_pruned_weights_score_zero_and_stay_pruned(x64):
  params, state, apply_fn, calibrate_fn = _ntk_sap_setup("cnn")
  masks = _round_masks("cnn", "ntk_sap", 2, params)
  scores = ntk_sap.ntk_sap_scores(_ntk_sap_draws("cnn", 2, params), masks, state, 0.01,
                                  apply_fn=apply_fn, calibrate_fn=calibrate_fn)
  for s, m in zip(jax.tree.leaves(scores), jax.tree.leaves(masks)):
    assert np.all(np.asarray(s)[~np.asarray(m)] == 0)
  final = ntk_sap.ntk_sap_masks(apply_fn, params, (8, 8, 2), 0.8, masks_lib.masks_from_scores,
                                key=jax.random.key(0), state=state, calibrate_fn=calibrate_fn,
                                num_rounds=2, num_samples=1, batch_size=4)
  assert masks_lib.density_summary(final, params)["sparsity/total"] == pytest.approx(0.8, 0.01)


def test_ntk_sap_needs_a_key():
  with pytest.raises(ValueError, match="key="):
    ntk_sap.ntk_sap_masks(FunctionApply(relu_mlp), {}, (6,), 0.5, masks_lib.masks_from_scores)


def test_kaiming_normal_redraw_draws_kernels_with_fan_in_variance():
  params = {"conv": {"kernel": jnp.zeros((3, 3, 40, 50)), "bias": jnp.full((50,), 0.5)}}
  drawn = ntk_sap.kaiming_normal_redraw(params)(jax.random.key(0))
  assert np.std(drawn["conv"]["kernel"]) == pytest.approx(np.sqrt(2 / 360), rel=0.02)
  np.testing.assert_array_equal(drawn["conv"]["bias"], params["conv"]["bias"])


# --- BatchNorm calibration. ------------------------------------------------------------------

def test_linen_calibration_sets_batch_statistics(x64):
  """Eval mode on the calibrated state is train mode (biased variance), and the unbiased
  variance is n / (n - 1) times it, n the entries per channel."""
  model = RefCNN()
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 2), jnp.float64)
  variables = model.init(jax.random.key(1), x, train=False)
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  biased = batch_statistics.LinenBatchStatistics(model, unbiased_variance=False)(
      params, state, x)
  train_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(model.apply({"params": params, **biased}, x, train=False),
                             train_out, rtol=1e-10)
  unbiased = batch_statistics.LinenBatchStatistics(model)(params, state, x)
  n = 3 * 8 * 8
  np.testing.assert_allclose(unbiased["batch_stats"]["bn1"]["var"],
                             biased["batch_stats"]["bn1"]["var"] * n / (n - 1), rtol=1e-12)


def test_nnx_calibration_sets_the_batch_mean():
  model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
  graphdef, params, state = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(0), (5, 3)) + 2.0
  calibrated = batch_statistics.NnxBatchStatistics(graphdef)(params, state, x)
  hidden = x @ params["layers"][0]["kernel"][...] + params["layers"][0]["bias"][...]
  np.testing.assert_allclose(calibrated["layers"][1]["mean"][...], hidden.mean(0), rtol=1e-5)
  np.testing.assert_allclose(calibrated["layers"][1]["var"][...], hidden.var(0), rtol=1e-4)


def test_batch_statistics_for_picks_the_model_kind():
  assert isinstance(batch_statistics.batch_statistics_for(LinenEvalApply(RefCNN())),
                    batch_statistics.LinenBatchStatistics)
  assert batch_statistics.batch_statistics_for(FunctionApply(relu_mlp)) is None


# --- PX against iurada/px-ntk-pruning. -------------------------------------------------------

def _px_setup(model: str):
  """`(params, apply_fn, copy_apply_fn, batches)` of the PX fixture's model."""
  params, state = _params(_stored(f"{model}/weights"))
  batches = [jnp.asarray(_image(v)) for k, v in sorted(_stored(f"{model}/px/batch").items())]
  if model == "cnn":
    return (params, LinenApply(RefCNN(), state), LinenApply(RefCNN(), state, "train"), batches)
  return params, relu_mlp, relu_mlp, batches


@pytest.mark.parametrize("t", ROUNDS)
@pytest.mark.parametrize("model", MODELS)
def test_px_scores_match_authors(x64, model, t):
  params, apply_fn, copy_apply_fn, batches = _px_setup(model)
  unchanged = px.authors_unchanged(apply_fn, params, batches[0])
  scores = px.px_scores(apply_fn, params, _round_masks(model, "px", t, params), batches,
                        unchanged=unchanged, copy_apply_fn=copy_apply_fn)
  _assert_close(_kernels(scores), _stored(f"{model}/px/round/{t}/score"))


@pytest.mark.parametrize("model", MODELS)
def test_px_masks_match_authors_every_round(x64, model):
  params, apply_fn, copy_apply_fn, batches = _px_setup(model)
  arrays = _arrays()
  select = RecordingSelect()
  px.px_masks(apply_fn, params, batches, float(arrays[f"{model}/px/sparsity"]), select,
              copy_apply_fn=copy_apply_fn, num_rounds=int(arrays[f"{model}/px/rounds"]))
  _assert_rounds_match(select, model, "px")


def test_px_scores_of_a_two_layer_relu_net_have_a_closed_form(x64):
  """f(x) = relu(x W1) W2, every leaf transformed: z1[b, k] = Σ_j g[b, j] Σ_i x[b, i]²
  (g: active units), z2[k] = Σ_ij W1²[i, j] W2²[j, k], R = Σ z1 z2; the scores are
  |∂R/∂W1²| W1² and |∂R/∂W2²| W2²."""
  k1, k2, kx = jax.random.split(jax.random.key(0), 3)
  params = {"l1": {"kernel": jax.random.normal(k1, (4, 6), jnp.float64)},
            "l2": {"kernel": jax.random.normal(k2, (6, 3), jnp.float64)}}
  x = jax.random.normal(kx, (5, 4), jnp.float64)
  apply_fn = lambda p, x: jax.nn.relu(x @ p["l1"]["kernel"]) @ p["l2"]["kernel"]
  unchanged = {"l1": {"kernel": False}, "l2": {"kernel": False}}
  scores = px.px_scores(apply_fn, params, masks_lib.ones_masks(params, dtype=bool), x,
                        unchanged=unchanged)
  w1sq, w2sq = params["l1"]["kernel"] ** 2, params["l2"]["kernel"] ** 2
  gates = (x @ params["l1"]["kernel"] > 0).astype(jnp.float64)
  z1 = jnp.broadcast_to((gates.sum(1) * (x**2).sum(1))[:, None], (5, 3))
  z1_total = z1.sum(0)  # [k]
  expected_w1 = jnp.abs(jnp.broadcast_to((w2sq @ z1_total)[None, :], (4, 6))) * w1sq
  expected_w2 = jnp.abs(jnp.outer(w1sq.sum(0), z1_total)) * w2sq
  np.testing.assert_allclose(scores["l1"]["kernel"], expected_w1, rtol=1e-12)
  np.testing.assert_allclose(scores["l2"]["kernel"], expected_w2, rtol=1e-12)


def test_px_keeps_normalization_and_the_output_layer_unchanged():
  model = SmallConvNet(num_classes=10)
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  apply_fn = LinenApply(model, {"batch_stats": variables["batch_stats"]})
  unchanged = px.authors_unchanged(apply_fn, variables["params"], x)
  assert px.output_layer(apply_fn, variables["params"], x) == (
      jax.tree_util.DictKey("head"),)
  assert unchanged["head"] == {"kernel": True, "bias": True}
  assert unchanged["conv1"]["bn"] == {"scale": True, "bias": True}
  assert unchanged["conv1"]["conv"] == {"kernel": False}


def test_px_output_layer_is_the_last_computed_with_not_the_last_cast():
  params = {"a_head": {"kernel": jnp.ones((4, 2))}, "b_body": {"kernel": jnp.ones((3, 4))}}

  def apply_fn(p, x):
    p = jax.tree.map(lambda a: a.astype(jnp.float16), p)  # casts "b_body" last
    return jax.nn.relu(x.astype(jnp.float16) @ p["b_body"]["kernel"]) @ p["a_head"]["kernel"]

  head = px.output_layer(apply_fn, params, jnp.ones((2, 3)))
  assert head == (jax.tree_util.DictKey("a_head"),)


def test_px_needs_layers_to_tell_the_classifier_apart():
  params = {"w1": jnp.ones((3, 4)), "w2": jnp.ones((4, 2))}
  with pytest.raises(ValueError, match="unchanged_fn"):
    px.authors_unchanged(lambda p, x: jax.nn.relu(x @ p["w1"]) @ p["w2"], params,
                         jnp.ones((2, 3)))


def test_px_rejects_a_model_without_relu():
  params = {"l1": {"kernel": jnp.ones((3, 4))}, "l2": {"kernel": jnp.ones((4, 2))}}
  tanh_net = lambda p, x: jnp.tanh(x @ p["l1"]["kernel"]) @ p["l2"]["kernel"]
  with pytest.raises(relu_rewrite.NoReluError, match="no ReLU"):
    px.px_masks(tanh_net, params, jnp.ones((2, 3)), 0.5, masks_lib.masks_from_scores,
                num_rounds=1)


# --- The ReLU rewrite. -----------------------------------------------------------------------

def test_rewrite_relus_replaces_every_relu_in_order():
  x = jnp.array([[-1.0, 2.0, -3.0]])
  fn = lambda x: jax.jit(jax.nn.relu)(x) + jnp.maximum(0.0, 2 * x)
  seen = []
  out = relu_rewrite.rewrite_relus(fn, lambda v: (seen.append(v), -v)[1])(x)
  np.testing.assert_array_equal(out, -x - 2 * x)
  np.testing.assert_array_equal(seen[1], 2 * x)
  assert len(seen) == 2


def test_rewrite_relus_reaches_into_custom_vjp_and_remat():
  @jax.custom_vjp
  def doubled_relu(x):
    return jax.nn.relu(x) * 2

  doubled_relu.defvjp(lambda x: (doubled_relu(x), None), lambda _, g: (g,))
  fn = lambda x: doubled_relu(x) + jax.checkpoint(jax.nn.relu)(x)
  x = jnp.array([[-1.0, 2.0]])
  np.testing.assert_array_equal(relu_rewrite.rewrite_relus(fn, lambda v: -v)(x), -3 * x)


def test_rewrite_relus_leaves_batchnorm_variance_clamps_alone():
  """Flax's train-mode BatchNorm clamps its variance with max(., 0): not an activation."""
  model = nn.Sequential([nn.Dense(4), nn.BatchNorm(use_running_average=False), nn.relu])
  x = jnp.ones((3, 2))
  variables = model.init(jax.random.key(0), x)
  fn = lambda v, x: model.apply(v, x, mutable=["batch_stats"])[0]
  jaxpr = jax.make_jaxpr(fn)(variables, x).jaxpr
  assert relu_rewrite.count_relus(jaxpr) == 2
  assert relu_rewrite.count_relus(jaxpr, batch_size=3) == 1


def test_rewrite_relus_rejects_a_relu_inside_a_loop():
  def looped(x):
    return jax.lax.scan(lambda c, _: (jax.nn.relu(c), None), x, None, length=2)[0]

  with pytest.raises(NotImplementedError, match="loop"):
    relu_rewrite.rewrite_relus(looped, lambda v: v)(jnp.ones((2, 3)))


# --- Any model the library accepts. ----------------------------------------------------------

class NnxConvNet(nnx.Module):
  """conv -> BatchNorm -> relu -> mean -> linear, in NNX."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


def test_both_methods_prune_an_nnx_model_through_as_pure_model():
  pure, params, state = as_pure_model(NnxConvNet(nnx.Rngs(0)), None)
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 2))
  ntk_masks = ntk_sap.ntk_sap_masks(
      pure.apply, params, (6, 6, 2), 0.7, masks_lib.masks_from_scores, key=jax.random.key(1),
      state=state, calibrate_fn=batch_statistics.batch_statistics_for(pure.apply),
      num_rounds=2, num_samples=1, batch_size=4)
  px_masks = px.px_masks(lambda p, x: pure.apply(p, state, x), params, x, 0.7,
                         masks_lib.masks_from_scores, num_rounds=2)
  for masks in (ntk_masks, px_masks):
    assert masks_lib.density_summary(masks, params)["sparsity/total"] == pytest.approx(0.7, 0.01)
