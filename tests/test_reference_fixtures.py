"""prospr_jax against its methods' authors' PyTorch code, on the fixtures in tests/reference/.

`tests/reference/make_reference_fixtures.py` (run by hand with torch; its docstring names the
upstream commits) stored the weights, the batches and the authors' scores and masks of a small
BatchNorm CNN and an MLP in float64. Here the same models are rebuilt in Flax from those weights
and scored with prospr_jax in float64. Scores agree to 1e-5 relative after only the
normalization each reference applies; masks agree exactly, at the authors' kept count (their
rounding differs; see docs/methods.md). Only numpy reads the fixtures: no torch here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import prospr_jax as pj
from prospr_jax.adapters import LinenApply, LinenLoss
from prospr_jax.saliency import snip, synflow
from prospr_jax.adapters import BatchNormMode
from prospr_jax.tree_types import PyTree

REFERENCE_DIR = pathlib.Path(__file__).parent / "reference"
MODELS = ("cnn", "mlp")
GRASP_TEMPERATURE = 200.0
GRASP_EPS = 1e-10  # Synaptic-Flow's and alecwangcq's `|sum of scores| + eps` normalization


class RefCNN(nn.Module):
  """The fixture's CNN: conv1 3x3 (no bias) -> bn1 -> relu -> conv2 3x3 -> relu -> mean -> fc."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    pad = ((1, 1), (1, 1))
    x = nn.Conv(4, (3, 3), padding=pad, use_bias=False, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn1")(x)
    x = nn.relu(nn.Conv(4, (3, 3), padding=pad, name="conv2")(nn.relu(x)))
    return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


class RefMLP(nn.Module):
  """The fixture's MLP: fc1 -> tanh -> fc2 -> tanh -> fc3, with biases."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    x = jnp.tanh(nn.Dense(8, name="fc1")(x))
    x = jnp.tanh(nn.Dense(5, name="fc2")(x))
    return nn.Dense(3, name="fc3")(x)


def _to_flax(w: np.ndarray) -> np.ndarray:
  """torch layout -> Flax: conv OIHW -> HWIO, linear [out, in] -> [in, out]."""
  return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T


def _to_torch(w: np.ndarray) -> np.ndarray:
  """Flax layout -> torch: the inverse of `_to_flax`."""
  return w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T


@functools.cache
def _arrays(model: str) -> dict[str, np.ndarray]:
  with np.load(REFERENCE_DIR / f"{model}.npz") as data:
    return {k: data[k] for k in data.files}


@dataclasses.dataclass(frozen=True)
class Fixture:
  """One model of the fixtures, rebuilt in Flax (float64); `arrays` holds the whole npz."""

  module: nn.Module
  params: PyTree
  state: PyTree
  input_shape: tuple[int, ...]
  arrays: dict[str, np.ndarray]

  def batches(self, key: str) -> list[dict[str, jax.Array]]:
    """The batches `<key>/<i>/{image,label}`, images NCHW -> NHWC, in float64."""
    out, i = [], 0
    while f"{key}/{i}/image" in self.arrays:
      x = self.arrays[f"{key}/{i}/image"].astype(np.float64)
      out.append({"image": jnp.asarray(x.transpose(0, 2, 3, 1) if x.ndim == 4 else x),
                  "label": jnp.asarray(self.arrays[f"{key}/{i}/label"])})
      i += 1
    return out

  def pruning_batches(self, name: str) -> list[dict[str, jax.Array]]:
    """The batches the reference `name` scored on."""
    pool = self.batches("batch")
    return [pool[i] for i in self.arrays[f"{name}/batches"]]

  def layers(self, prefix: str) -> dict[str, np.ndarray]:
    """`{torch name: array}` stored under `prefix/` (torch layout)."""
    return {k[len(prefix) + 1:]: v for k, v in self.arrays.items()
            if k.startswith(prefix + "/") and "/" not in k[len(prefix) + 1:]}

  def mask_tree(self, prefix: str) -> PyTree:
    """The masks stored under `prefix/` as a bool pytree like `params` (others all True)."""
    stored = self.layers(prefix)

    def leaf(path, p):
      name = f"{path[0].key}.weight"
      return jnp.asarray(_to_flax(stored[name])) if path[-1].key == "kernel" else (
          jnp.ones(p.shape, bool))

    return jax.tree_util.tree_map_with_path(leaf, self.params)

  def num_prunable(self) -> int:
    return sum(p.size for p in _kernels(self.params).values())


@functools.cache
def _fixture(model: str) -> Fixture:
  """The fixture of `model` ('cnn' or 'mlp'); call under `jax.enable_x64`."""
  arrays = _arrays(model)
  params: dict[str, dict[str, jax.Array]] = {}
  stats: dict[str, dict[str, jax.Array]] = {}
  for key, w in arrays.items():
    if not key.startswith("weights/"):
      continue
    module, leaf = key.removeprefix("weights/").split(".")
    if leaf.startswith("running_"):
      stats.setdefault(module, {})[leaf.removeprefix("running_")] = jnp.asarray(w)
    elif module.startswith("bn"):
      params.setdefault(module, {})["scale" if leaf == "weight" else "bias"] = jnp.asarray(w)
    else:
      params.setdefault(module, {})["kernel" if leaf == "weight" else "bias"] = jnp.asarray(
          _to_flax(w) if leaf == "weight" else w)
  module, input_shape = (RefCNN(), (8, 8, 2)) if model == "cnn" else (RefMLP(), (6,))
  state = {"batch_stats": stats} if stats else {}
  fixture = Fixture(module, params, state, input_shape, arrays)
  # The Flax model has exactly the fixture's variables.
  like = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *input_shape)),
                                            train=False))
  assert jax.tree.map(jnp.shape, like) == jax.tree.map(jnp.shape, {"params": params, **state})
  return fixture


def _kernels(tree: PyTree) -> dict[str, np.ndarray]:
  """The kernels of a params-like pytree, keyed and laid out as in torch ('conv1.weight')."""
  return {f"{path[0].key}.weight": _to_torch(np.asarray(x))
          for path, x in jax.tree_util.tree_leaves_with_path(tree) if path[-1].key == "kernel"}


def _assert_close(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                  where: dict[str, np.ndarray] | None = None) -> None:
  """Equal to 1e-5 relative (entries `where` is True, if given); 1e-9 of the largest |score|
  absolute, so that exactly-zero reference entries compare too."""
  assert ours.keys() == theirs.keys()
  scale = max(np.abs(v).max() for v in theirs.values())
  for name in theirs:
    keep = np.ones(theirs[name].shape, bool) if where is None else where[name]
    np.testing.assert_allclose(ours[name][keep], theirs[name][keep], rtol=1e-5,
                               atol=1e-9 * scale, err_msg=name)


def _assert_same_masks(ours: PyTree, theirs: dict[str, np.ndarray]) -> None:
  ours = _kernels(ours)
  assert ours.keys() == theirs.keys()
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def _kept(masks: dict[str, np.ndarray]) -> int:
  return int(sum(m.sum() for m in masks.values()))


def _loss(fx: Fixture, bn_mode: BatchNormMode, temperature: float = 1.0) -> LinenLoss:
  return LinenLoss(fx.module, bn_mode=bn_mode, temperature=temperature)


# --- SNIP (Synaptic-Flow `Pruners/pruners.py` SNIP, BatchNorm in eval mode). -----------------

@pytest.mark.parametrize("model", MODELS)
def test_snip_matches_synaptic_flow(x64, model):
  """Their scores are |Σ_b ∂L_b/∂c| divided by their total; our batch mean, divided likewise."""
  fx = _fixture(model)
  loss_fn = _loss(fx, "eval")
  batches = fx.pruning_batches("snip")
  scores = _kernels(pj.snip_scores(loss_fn, fx.params, batches, state=fx.state))
  total = sum(s.sum() for s in scores.values())
  _assert_close({k: s / total for k, s in scores.items()}, fx.layers("snip/score"))
  masks = pj.prune("snip", fx.params, float(fx.arrays["snip/sparsity"]), loss_fn=loss_fn,
                   batches=batches, state=fx.state)
  _assert_same_masks(masks, fx.layers("snip/round/1/mask"))


# --- GraSP (Synaptic-Flow's GraSP in eval mode; alecwangcq's GraSP.py in train mode). -------

def _grasp_normalized(scores: dict[str, np.ndarray], num_batches: int, sign: float):
  """The references' normalized GraSP scores from ours (`θ ⊙ H̄ḡ`, batch means).

  Both references sum `g` over the batches and `Hg` over them again, `B²` times our means,
  then divide by `|sum of all scores| + 1e-10`; alecwangcq's negates (`-θ ⊙ Hg`).
  """
  raw = {k: sign * num_batches**2 * s for k, s in scores.items()}
  norm = abs(sum(s.sum() for s in raw.values())) + GRASP_EPS
  return {k: s / norm for k, s in raw.items()}


@pytest.mark.parametrize("model", MODELS)
def test_grasp_matches_synaptic_flow(x64, model):
  fx = _fixture(model)
  loss_fn = _loss(fx, "eval", GRASP_TEMPERATURE)
  batches = fx.pruning_batches("grasp_sf")
  scores = _kernels(pj.grasp_scores(loss_fn, fx.params, batches, state=fx.state))
  _assert_close(_grasp_normalized(scores, len(batches), 1.0), fx.layers("grasp_sf/score"))
  masks = pj.prune("grasp", fx.params, float(fx.arrays["grasp_sf/sparsity"]), loss_fn=loss_fn,
                   batches=batches, state=fx.state)
  _assert_same_masks(masks, fx.layers("grasp_sf/round/1/mask"))


@pytest.mark.parametrize("model", MODELS)
def test_grasp_matches_its_authors(x64, model):
  """alecwangcq/GraSP `GraSP.py` on the two halves of its `GraSP_fetch_data` (train mode).

  It keeps the scores `<=` the `int(n s)`-th largest `-θ⊙Hg`, one more than `n - int(n s)`;
  at that kept count our masks are theirs.
  """
  fx = _fixture(model)
  loss_fn = _loss(fx, "train", GRASP_TEMPERATURE)
  halves = fx.batches("grasp/half")
  scores = _kernels(pj.grasp_scores(loss_fn, fx.params, halves, state=fx.state))
  _assert_close(_grasp_normalized(scores, len(halves), -1.0), fx.layers("grasp/score"))
  theirs = fx.layers("grasp/mask")
  n, s = fx.num_prunable(), float(fx.arrays["grasp/sparsity"])
  assert _kept(theirs) == n - int(n * s) + 1
  masks = pj.prune("grasp", fx.params, 1 - _kept(theirs) / n, loss_fn=loss_fn, batches=halves,
                   state=fx.state)
  _assert_same_masks(masks, theirs)


# --- Iterative methods: per-round masks. ----------------------------------------------------

class _RecordingSelect:
  """`masks_from_scores` that keeps every round's masks (`select` of the iterative methods)."""

  def __init__(self):
    self.rounds: list[PyTree] = []

  def __call__(self, scores: PyTree, sparsity: float, eligible: PyTree | None = None) -> PyTree:
    self.rounds.append(pj.masks_from_scores(scores, sparsity, eligible=eligible))
    return self.rounds[-1]


def _assert_same_rounds(fx: Fixture, name: str, rounds: Sequence[PyTree]) -> None:
  assert len(rounds) == int(fx.arrays[f"{name}/rounds"])
  for t, masks in enumerate(rounds, 1):
    _assert_same_masks(masks, fx.layers(f"{name}/round/{t}/mask"))


# --- SynFlow (Synaptic-Flow, eval mode). ----------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_synflow_matches_synaptic_flow(x64, model):
  """Unnormalized scores of the dense network and of the last round, and every round's masks."""
  fx = _fixture(model)
  apply_fn = LinenApply(fx.module, fx.state)
  score = functools.partial(synflow.synflow_scores, fx.params, apply_fn=apply_fn,
                            input_shape=fx.input_shape)
  _assert_close(_kernels(score(pj.ones_masks(fx.params, dtype=bool))),
                fx.layers("synflow/first_score"))
  rounds = int(fx.arrays["synflow/rounds"])
  _assert_close(_kernels(score(fx.mask_tree(f"synflow/round/{rounds - 1}/mask"))),
                fx.layers("synflow/score"))
  select = _RecordingSelect()
  synflow.synflow_masks(apply_fn, fx.params, fx.input_shape,
                        float(fx.arrays["synflow/sparsity"]), select, num_rounds=rounds,
                        float64=True)
  _assert_same_rounds(fx, "synflow", select.rounds)


# --- Iterative SNIP and FORCE (naver/force `pruning_algos.py`, train mode). ----------------

@pytest.mark.parametrize("method", ["iterative_snip", "force"])
@pytest.mark.parametrize("model", MODELS)
def test_gradual_methods_match_naver_force(x64, model, method):
  """Every round's masks, and the last round's saliencies `|θ ⊙ mean_b ∇L_b(m ⊙ θ)|` (for
  iterative SNIP on the weights still unpruned: theirs sets the others to the minimum)."""
  fx = _fixture(model)
  loss_fn = _loss(fx, "train")
  batches = fx.pruning_batches(method)
  rounds = int(fx.arrays[f"{method}/rounds"])
  select = _RecordingSelect()
  snip.gradual_sensitivity_masks(loss_fn, fx.params, batches,
                                 float(fx.arrays[f"{method}/sparsity"]), select,
                                 state=fx.state, num_rounds=rounds,
                                 allow_regrowth=method == "force")
  _assert_same_rounds(fx, method, select.rounds)

  previous = fx.mask_tree(f"{method}/round/{rounds - 1}/mask")
  sensitivities = [snip.connection_sensitivity(fx.params, fx.state, b, previous, loss_fn=loss_fn)
                   for b in batches]
  scores = _kernels(jax.tree.map(lambda *s: jnp.abs(sum(s) / len(s)), *sensitivities))
  eligible = None if method == "force" else fx.layers(f"{method}/round/{rounds - 1}/mask")
  _assert_close(scores, fx.layers(f"{method}/score"), where=eligible)


# --- ProsPr (mil-ad/prospr `prospr/prospr.py`, train mode, inner SGD). ---------------------

# ProsPr's inner loop as a Python loop unrolled at trace time, and as a lax.scan.
_UNROLLS = pytest.mark.parametrize("unroll", [True, 1], ids=["unrolled", "scan"])


def _prospr(fx: Fixture, name: str, optimizer: optax.GradientTransformation, unroll: bool | int,
            first_order: bool = False) -> dict[str, np.ndarray]:
  scores = pj.prospr_scores(_loss(fx, "train"), fx.params, fx.pruning_batches(name),
                            state=fx.state, num_steps=int(fx.arrays["prospr/steps"]),
                            optimizer=optimizer, first_order=first_order, unroll=unroll)
  return _kernels(scores)


@_UNROLLS
@pytest.mark.parametrize("name", ["prospr", "prospr_first_order", "prospr_same_batch"])
@pytest.mark.parametrize("model", MODELS)
def test_prospr_matches_its_authors(x64, model, name, unroll):
  """Unnormalized `|∂L(θ3; D3)/∂c|` with momentum 0: new batches in the inner steps (their
  API default), first order, and one batch for every step (their CLI default). Their masks keep
  `ceil(n (1 - s))`; at that count ours are theirs."""
  fx = _fixture(model)
  assert float(fx.arrays[f"{name}/momentum"]) == 0.0
  optimizer = optax.sgd(float(fx.arrays["prospr/lr"]))
  _assert_close(_prospr(fx, name, optimizer, unroll, first_order=name == "prospr_first_order"),
                fx.layers(f"{name}/score"))
  theirs = fx.layers(f"{name}/mask")
  n = fx.num_prunable()
  assert _kept(theirs) == math.ceil(n * (1 - float(fx.arrays[f"{name}/sparsity"])))
  masks = pj.prune(name.removesuffix("_same_batch"), fx.params, 1 - _kept(theirs) / n,
                   loss_fn=_loss(fx, "train"), batches=fx.pruning_batches(name),
                   state=fx.state, num_steps=int(fx.arrays["prospr/steps"]),
                   optimizer=optimizer, unroll=unroll)
  _assert_same_masks(masks, theirs)


def _sgd_with_detached_first_buffer(lr: float, momentum: float) -> optax.GradientTransformation:
  """mil-ad/prospr's `functional_sgd`: momentum SGD whose first buffer is `grad.detach()`."""

  def init(params):
    return jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params)

  def update(grads, state, params=None):
    del params
    count, buf = state
    buf = jax.tree.map(
        lambda b, g: jnp.where(count == 0, jax.lax.stop_gradient(g), momentum * b + g), buf, grads)
    return jax.tree.map(lambda b: -lr * b, buf), (count + 1, buf)

  return optax.GradientTransformation(init, update)


@_UNROLLS
def test_prospr_with_momentum_differs_from_its_authors_only_by_their_detached_buffer(x64, unroll):
  """With momentum 0.9 their meta-gradient drops the path through the first inner gradient:
  ours (the true meta-gradient, tested against finite differences in test_prospr.py) differs
  (by 14% of the largest score on this MLP), and ours with that buffer detached is theirs."""
  fx = _fixture("mlp")
  lr, momentum = float(fx.arrays["prospr/lr"]), float(fx.arrays["prospr_momentum/momentum"])
  theirs = fx.layers("prospr_momentum/score")
  _assert_close(_prospr(fx, "prospr_momentum", _sgd_with_detached_first_buffer(lr, momentum),
                        unroll), theirs)
  ours = _prospr(fx, "prospr_momentum", optax.sgd(lr, momentum=momentum), unroll)
  relative = max(np.abs(ours[k] - theirs[k]).max() for k in theirs) / max(
      np.abs(v).max() for v in theirs.values())
  assert relative > 1e-3
