"""Structured (channel-group) pruning and compaction on the model zoo: the traced groups and the
masks equal those of the former name-based implementation; compaction equals masking."""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import eval_logits, masked_variables, random_variables
from prospr_jax.models import zoo_compaction
from prospr_jax import structured
from prospr_jax.experiment import prune_config, train
from prospr_jax import masks as masks_lib
from prospr_jax.adapters import LinenLoss
from prospr_jax.models import get_model
from prospr_jax.models.resnet import Bottleneck, ResNet
from prospr_jax.models.vgg import VGG
from prospr_jax.saliency import registry
from prospr_jax.transform import keep_masked

SMALL_VGG_PLAN = (8, "M", 12, 12, "M", 16)
"""Spatial sizes on an 8x8 input: conv1 8x8, conv2 and conv3 4x4, conv4 2x2."""
IMG = (8, 8, 3)


def _keys(path) -> tuple[str, ...]:
  return tuple(str(k.key) for k in path)


def _setup(model, shape=IMG, batch_size=4, seed=0):
  x = jax.random.normal(jax.random.key(seed), (batch_size, *shape))
  batch = {"image": x, "label": jnp.arange(batch_size) % 10}
  return random_variables(model, shape, seed), batch


def _example(shape):
  return jax.ShapeDtypeStruct((2, *shape), jnp.float32)


def _random_masks(model, variables, shape, sparsity=0.5, seed=3):
  return structured.structured_prune(
      "random", model, variables, None, sparsity, example_input=_example(shape),
      key=jax.random.key(seed), min_kept_per_group=1,
  )


def _groups(model, variables, shape):
  return structured.trace_model(model, variables, _example(shape)).groups


MODELS = {
    "vgg": lambda: (VGG(10, config=SMALL_VGG_PLAN), IMG),
    "small_convnet": lambda: (get_model("small_convnet", 10), (12, 12, 1)),
    "resnet20": lambda: (get_model("resnet20", 10), IMG),
    "bottleneck": lambda: (ResNet(10, stage_sizes=(2, 1), stage_features=(2, 4),
                                  block_cls=Bottleneck), IMG),
}


# --- Groups: traced from the program, equal to the hand-derived coupling of the zoo. ----------

def _conv_bn(conv, bn):
  return {f"{conv}/kernel", f"{bn}/scale", f"{bn}/bias"}


def _resnet_expected_groups(model):
  """Hand-written ResNet groups: {name: (members, consumers)}.

  Every block's inner conv/BN pairs are one group each, read by the next conv. A residual
  stream starts at the stem, or at a block 0 with a projection shortcut (stride 2, or the
  Bottleneck's 4x widening in stage 1); it holds every block's last conv/BN and is read by the
  first conv (and shortcut) of the blocks it enters, finally by the head.
  """
  last = 3 if model.block_cls is Bottleneck else 2
  expected, readers = {"stem_conv": _conv_bn("stem_conv", "stem_bn")}, {"stem_conv": set()}
  stream = "stem_conv"
  for s, n in enumerate(model.stage_sizes, start=1):
    for b in range(n):
      blk = f"stage{s}_block{b}"
      readers[stream].add(f"{blk}/conv1/kernel")
      if b == 0 and (s > 1 or model.block_cls.expansion > 1):
        readers[stream].add(f"{blk}/shortcut_conv/kernel")
        stream = f"{blk}/shortcut_conv"
        expected[stream], readers[stream] = _conv_bn(stream, f"{blk}/shortcut_bn"), set()
      for j in range(1, last):
        expected[f"{blk}/conv{j}"] = _conv_bn(f"{blk}/conv{j}", f"{blk}/bn{j}")
        readers[f"{blk}/conv{j}"] = {f"{blk}/conv{j + 1}/kernel"}
      expected[stream] |= _conv_bn(f"{blk}/conv{last}", f"{blk}/bn{last}")
  readers[stream].add("head/kernel")
  return {name: (members, readers[name]) for name, members in expected.items()}


def _chain_expected_groups(n):
  return {f"conv{i}/conv": (_conv_bn(f"conv{i}/conv", f"conv{i}/bn"),
                            {f"conv{i + 1}/conv/kernel" if i < n else "head/kernel"})
          for i in range(1, n + 1)}


def _as_sets(groups):
  return {g.name: ({m.path for m in g.members}, {c.path for c in g.consumers}) for g in groups}


ZOO = {
    "small_convnet": ((12, 12, 1), lambda m: _chain_expected_groups(4)),
    "vgg16": ((32, 32, 3), lambda m: _chain_expected_groups(13)),
    "resnet20": (IMG, _resnet_expected_groups),
    "resnet50": ((32, 32, 3), _resnet_expected_groups),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_groups_equal_the_hand_derived_coupling(name):
  shape, expected = ZOO[name]
  model = get_model(name, 10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                                train=False))
  groups = _groups(model, variables, shape)
  assert _as_sets(groups) == expected(model)
  params = dict(structured.scoring.flat_leaves(variables["params"]))
  for g in groups:
    for slot in g.members:  # the last axis, every channel once, in order
      assert slot.axis == params[slot.path].ndim - 1
      np.testing.assert_array_equal(slot.index, np.arange(g.size)[:, None])
    for slot in g.consumers:  # the input axis of a kernel
      assert slot.axis == params[slot.path].ndim - 2
      np.testing.assert_array_equal(slot.index, np.arange(g.size)[:, None])
    assert {s.path.rsplit("/", 1)[1] for s in g.state} == {"mean", "var"}
  # Every conv kernel is a member of exactly one group; the head of none.
  kernels = {p for p, x in params.items() if x.ndim > 1}
  members = [m.path for g in groups for m in g.members if m.path.endswith("kernel")]
  assert sorted(members) == sorted(kernels - {"head/kernel"})


def test_resnet20_group_order_and_sizes():
  model = get_model("resnet20", 10)
  variables, _ = _setup(model)
  groups = _groups(model, variables, IMG)
  assert [g.name for g in groups][:5] == [
      "stem_conv", "stage1_block0/conv1", "stage1_block1/conv1", "stage1_block2/conv1",
      "stage2_block0/conv1"]
  assert [g.size for g in groups if "shortcut" in g.name or g.name == "stem_conv"] == [16, 32, 64]
  assert structured.num_channels(groups) == 3 * (16 + 32 + 64) + (16 + 32 + 64)


GOLDEN_CASES = {
    "small_convnet": ((12, 12, 1), ("prospr", "prospr_first_order", "snip", "magnitude", "random")),
    "tiny_resnet": (IMG, ("prospr", "prospr_first_order", "snip", "magnitude", "random")),
    "resnet20": (IMG, ("magnitude", "random")),
    "vgg16": ((32, 32, 3), ("magnitude", "random")),
    "resnet50": ((32, 32, 3), ("magnitude", "random")),
}


@pytest.fixture(scope="module")
def golden():
  """Kept channels of the former name-based `structured_prune` (commit 1e5f9e2, see
  tests/data/README.md), keyed `model|method|group`."""
  with np.load(pathlib.Path(__file__).parent / "data" / "structured_golden_masks.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name, method", [(n, m) for n, (_, ms) in GOLDEN_CASES.items()
                                          for m in ms])
def test_masks_equal_the_name_based_implementation(golden, name, method):
  shape = GOLDEN_CASES[name][0]
  model = TINY_RESNET() if name == "tiny_resnet" else get_model(name, 10)
  variables, batch = _setup(model, shape)
  batches = [batch, {"image": batch["image"] * 1.5, "label": batch["label"]}]
  options = {"num_steps": 1, "optimizer": optax.sgd(0.05)} if method.startswith("prospr") else {}
  masks = structured.structured_prune(method, model, variables, batches, 0.5,
                                      key=jax.random.key(7), min_kept_per_group=1, **options)
  groups = _groups(model, variables, shape)
  keep = structured.channels_from_masks(variables["params"], groups, masks)
  expected = {k.split("|")[2]: v for k, v in golden.items() if k.startswith(f"{name}|{method}|")}
  assert list(keep) == [g.name for g in groups] and set(keep) == set(expected)
  for group, kept in keep.items():
    np.testing.assert_array_equal(kept, expected[group], err_msg=group)


# --- Compaction equals masking. --------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_compacted_outputs_equal_masked_outputs(name):
  model, shape = MODELS[name]()
  variables, batch = _setup(model, shape)
  masks = _random_masks(model, variables, shape)
  small, small_vars = zoo_compaction.compact(model, variables, masks, batch["image"])
  masked_logits = eval_logits(model, masked_variables(variables, masks), batch["image"])
  small_logits = eval_logits(small, small_vars, batch["image"])
  np.testing.assert_allclose(small_logits, masked_logits, rtol=1e-5, atol=1e-5)
  # The test bites: the model really shrank, and pruning changed the function.
  count = structured.count_params
  assert count(small_vars["params"]) < count(variables["params"])
  dense_logits = eval_logits(model, variables, batch["image"])
  assert not np.allclose(dense_logits, masked_logits, atol=1e-3)


def test_masking_kernel_outputs_alone_would_leave_pruned_channels_alive():
  """Naive per-layer channel masks (kernel outputs only, BN and consumer inputs unmasked) differ:
  eval-mode BN turns a zero channel into `bias - scale * mean / std`."""
  model, shape = MODELS["vgg"]()
  variables, batch = _setup(model, shape)
  params = variables["params"]
  masks = _random_masks(model, variables, shape)

  def naive(path, x):
    name = "/".join(_keys(path))
    if name.endswith("kernel") and not name.startswith("head"):
      return _out_channels(masks, params, name).reshape((1,) * (x.ndim - 1) + (-1,))
    return np.ones(x.shape, bool)

  naive_masks = jax.tree_util.tree_map_with_path(naive, params)
  small, small_vars = zoo_compaction.compact(model, variables, masks, batch["image"])
  wrong = eval_logits(model, masked_variables(variables, naive_masks), batch["image"])
  assert not np.allclose(eval_logits(small, small_vars, batch["image"]), wrong, atol=1e-3)


def test_compaction_after_masked_training():
  """Train a few masked SGD steps (keep_masked, train-mode BN), then compact: still equal."""
  model, shape = MODELS["bottleneck"]()
  variables, batch = _setup(model, shape)
  masks = _random_masks(model, variables, shape)
  tx = optax.chain(keep_masked(masks), optax.sgd(0.1, momentum=0.9))
  params, stats = masks_lib.apply_masks(variables["params"], masks), variables["batch_stats"]
  opt_state = tx.init(params)
  loss_fn = LinenLoss(model)

  @jax.jit
  def step(params, stats, opt_state):
    grads, state = jax.grad(loss_fn, has_aux=True)(params, {"batch_stats": stats}, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state["batch_stats"], opt_state

  for _ in range(3):
    params, stats, opt_state = step(params, stats, opt_state)
  trained = {"params": params, "batch_stats": stats}
  small, small_vars = zoo_compaction.compact(model, trained, masks, batch["image"])
  np.testing.assert_allclose(
      eval_logits(small, small_vars, batch["image"]),
      eval_logits(model, trained, batch["image"]), rtol=1e-5, atol=1e-5)


def test_save_and_load_roundtrip(tmp_path):
  for name in ("resnet20", "small_convnet"):
    model, shape = MODELS[name]()
    variables, batch = _setup(model, shape)
    masks = _random_masks(model, variables, shape)
    small, small_vars = zoo_compaction.compact(model, variables, masks, batch["image"])
    zoo_compaction.save(tmp_path / name, small, small_vars)
    loaded, loaded_vars = zoo_compaction.load(tmp_path / name)
    assert zoo_compaction.model_spec(loaded) == zoo_compaction.model_spec(small)
    np.testing.assert_array_equal(eval_logits(loaded, loaded_vars, batch["image"]),
                                  eval_logits(small, small_vars, batch["image"]))


# --- Coupling: residual additions and the head. ----------------------------------------------

def _leaf(tree, path: str):
  return functools.reduce(lambda t, k: t[k], path.split("/"), tree)


def _channel_mask(masks, path: str) -> np.ndarray:
  """A channel-shaped mask leaf as a flat vector."""
  return np.asarray(_leaf(masks, path)).reshape(-1)


def _out_channels(masks, params, path: str) -> np.ndarray:
  """Output channels of a leaf with any kept entry."""
  shape = _leaf(params, path).shape
  return np.broadcast_to(_leaf(masks, path), shape).reshape(-1, shape[-1]).any(0)


@pytest.mark.parametrize("name", ["resnet20", "bottleneck"])
def test_no_residual_addition_mixes_pruned_and_kept_channels(name):
  model, shape = MODELS[name]()
  variables, _ = _setup(model, shape)
  params = variables["params"]
  masks = _random_masks(model, variables, shape)
  last = "bn3" if model.block_cls is Bottleneck else "bn2"
  stream = _channel_mask(masks, "stem_bn/scale")  # what enters stage1_block0
  pruned_streams = 0
  for s, n in enumerate(model.stage_sizes, start=1):
    for b in range(n):
      blk = f"stage{s}_block{b}"
      left = _channel_mask(masks, f"{blk}/{last}/scale")
      right = (_channel_mask(masks, f"{blk}/shortcut_bn/scale") if "shortcut_bn" in params[blk]
               else stream)
      np.testing.assert_array_equal(left, right, err_msg=blk)
      for leaf in (f"{blk}/{last}/bias", f"{blk}/conv{last[-1]}/kernel"):
        np.testing.assert_array_equal(_out_channels(masks, params, leaf), left, err_msg=leaf)
      pruned_streams += not left.all()
      stream = left
  assert pruned_streams > 0  # the test bites
  head_kernel = np.broadcast_to(masks["head"]["kernel"], params["head"]["kernel"].shape)
  assert head_kernel.any(axis=0).all()  # every output of the head is kept
  assert (head_kernel == head_kernel[:, :1]).all()  # only whole input channels are removed
  assert np.asarray(masks["head"]["bias"]).all()


# --- Counts. ---------------------------------------------------------------------------------

def _kept(masks, path):
  return int(_channel_mask(masks, path).sum())


def _vgg_counts(masks):
  """Independent params/MACs of the small VGG from its BN-scale masks."""
  kept = [3] + [_kept(masks, f"conv{i}/bn/scale") for i in range(1, 5)]
  hw = [64, 16, 16, 4]
  params = sum(9 * kept[i] * kept[i + 1] + 2 * kept[i + 1] for i in range(4)) + kept[4] * 10 + 10
  macs = sum(hw[i] * 9 * kept[i] * kept[i + 1] for i in range(4)) + kept[4] * 10
  return params, macs


def _resnet20_counts(masks):
  """Independent params/MACs of ResNet-20 on 8x8 inputs (stages at 8x8, 4x4, 2x2)."""
  hw = {1: 64, 2: 16, 3: 4}
  stream = {s: _kept(masks, f"stage{s}_block0/bn2/scale") for s in (1, 2, 3)}
  params = 27 * stream[1] + 2 * stream[1] + stream[3] * 10 + 10
  macs = 64 * 27 * stream[1] + stream[3] * 10
  for s in (1, 2, 3):
    for b in range(3):
      c_in = stream[s - 1] if (b == 0 and s > 1) else stream[s]
      inner = _kept(masks, f"stage{s}_block{b}/bn1/scale")
      params += 9 * c_in * inner + 2 * inner + 9 * inner * stream[s] + 2 * stream[s]
      macs += hw[s] * (9 * c_in * inner + 9 * inner * stream[s])
      if b == 0 and s > 1:
        params += c_in * stream[s] + 2 * stream[s]
        macs += hw[s] * c_in * stream[s]
  return params, macs


@pytest.mark.parametrize("name, counts", [("vgg", _vgg_counts), ("resnet20", _resnet20_counts)])
def test_param_and_mac_counts_match_independent_counts(name, counts):
  model, shape = MODELS[name]()
  variables, batch = _setup(model, shape)
  masks = _random_masks(model, variables, shape, sparsity=0.6)
  small, small_vars = zoo_compaction.compact(model, variables, masks, batch["image"])
  expected_params, expected_macs = counts(masks)
  assert structured.count_params(small_vars["params"]) == expected_params
  # ... = the weights surviving in the masked model (random BN params are all nonzero).
  masked = masks_lib.apply_masks(variables["params"], masks)
  assert sum(int(np.count_nonzero(x)) for x in jax.tree.leaves(masked)) == expected_params
  macs = lambda m, v: structured.count_macs(functools.partial(eval_logits, m), v, batch["image"])
  assert macs(small, small_vars) == expected_macs
  assert macs(model, variables) > expected_macs
  general = structured.compact(model, variables, masks, batch["image"]).report
  assert (general.params_after, general.macs_after) == (expected_params, expected_macs)
  assert general.macs_before == macs(model, variables)
  # density_summary counts exactly the kernel weights the compacted model has.
  density = masks_lib.density_summary(masks, variables["params"])["density/total"]
  assert round(density * _kernel_size(variables["params"])) == _kernel_size(small_vars["params"])


def _kernel_size(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params) if x.ndim > 1)


def test_kept_channels_exact_at_every_sparsity():
  model, shape = MODELS["resnet20"]()
  variables, _ = _setup(model, shape)
  groups = _groups(model, variables, shape)
  n = structured.num_channels(groups)
  for sparsity in (0.0, 0.1, 0.33, 0.5, 0.77, 0.95):
    masks = _random_masks(model, variables, shape, sparsity)
    keep = structured.channels_from_masks(variables["params"], groups, masks)
    assert sum(int(k.sum()) for k in keep.values()) == round((1 - sparsity) * n)
    assert all(k.any() for k in keep.values())  # min_kept_per_group=1


def test_min_kept_per_group_rule():
  scores = {"a": np.array([5.0, 4.0, 3.0]), "b": np.array([0.1, 0.2])}
  with pytest.raises(masks_lib.LayerCollapseError, match="min_kept_per_group=1"):
    structured.select_channels(scores, 0.6)  # keeps 2 of 5: both from 'a'
  keep = structured.select_channels(scores, 0.6, min_kept_per_group=1)
  np.testing.assert_array_equal(keep["a"], [True, False, False])
  np.testing.assert_array_equal(keep["b"], [False, True])
  collapsed = structured.select_channels(scores, 0.6, min_kept_per_group=0)
  assert not collapsed["b"].any() and collapsed["a"].sum() == 2
  with pytest.raises(ValueError, match="fewer than min_kept_per_group"):
    structured.select_channels(scores, 0.9, min_kept_per_group=1)  # keeps 0 of 5


# --- Scores against an explicit shared gate. -------------------------------------------------

TINY_RESNET = functools.partial(ResNet, 10, stage_sizes=(1, 1), stage_features=(4, 8))


def _tiny_resnet_gating():
  """Hand-written {member path: gate label} of TINY_RESNET.

  Stage 1: stem + an identity block (one stream); stage 2: a projection block.
  """
  gating = {}
  for p in ("stem_conv/kernel", "stem_bn/scale", "stem_bn/bias"):
    gating[p] = "stream1"
  for blk in ("stage1_block0", "stage2_block0"):
    for p in ("conv1/kernel", "bn1/scale", "bn1/bias"):
      gating[f"{blk}/{p}"] = f"{blk}/inner"
    for p in ("conv2/kernel", "bn2/scale", "bn2/bias"):
      gating[f"{blk}/{p}"] = "stream1" if blk.startswith("stage1") else "stream2"
  for p in ("shortcut_conv/kernel", "shortcut_bn/scale", "shortcut_bn/bias"):
    gating[f"stage2_block0/{p}"] = "stream2"
  return gating


def _gated(params, gates, gating):
  """Each member leaf times its group's shared gate vector (broadcast on the last axis)."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x * gates[gating["/".join(_keys(p))]] if "/".join(_keys(p)) in gating else x,
      params)


def _label_to_group(groups, gating):
  return {gating[g.members[0].path]: g.name for g in groups}


def _hand_prospr_loss(gates, params, state, batches, loss_fn, gating, lr, first_order):
  """`L(θk)` after k plain SGD steps from `θ0 = gate ⊙ θ` (stop-gradient updates if first order)."""
  theta = _gated(params, gates, gating)
  for b in batches[:-1]:
    grads, state = jax.grad(loss_fn, has_aux=True)(theta, state, b)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    theta = jax.tree.map(lambda t, g: t - lr * g, theta, grads)
  return loss_fn(theta, state, batches[-1])[0]


@pytest.mark.parametrize("method, num_steps", [("snip", 0), ("prospr", 1),
                                               ("prospr_first_order", 1)])
def test_group_score_equals_gradient_wrt_shared_gate(method, num_steps):
  model = TINY_RESNET()
  variables, batch = _setup(model, batch_size=6)
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  batches = [{"image": batch["image"] * (1 + 0.1 * i), "label": batch["label"]}
             for i in range(num_steps + 1)]
  gating = _tiny_resnet_gating()
  groups = _groups(model, variables, IMG)
  names = _label_to_group(groups, gating)
  sizes = {g.name: g.size for g in groups}
  gates = {label: jnp.ones(sizes[name]) for label, name in names.items()}
  loss_fn, lr = LinenLoss(model), 0.05
  hand_loss = functools.partial(_hand_prospr_loss, loss_fn=loss_fn, gating=gating, lr=lr,
                                first_order=method == "prospr_first_order")
  hand = jax.jit(jax.grad(hand_loss))(gates, params, state, batches)
  options = {} if method == "snip" else {"num_steps": num_steps, "optimizer": optax.sgd(lr)}
  scores = structured.group_scores(method, model, variables, batches, **options)
  assert set(scores) == set(names.values())
  for label, name in names.items():
    np.testing.assert_allclose(scores[name], np.abs(hand[label]), rtol=2e-3, atol=1e-6,
                               err_msg=name)
  assert max(float(np.max(s)) for s in scores.values()) > 0


def test_magnitude_and_random_group_scores():
  model = TINY_RESNET()
  variables, _ = _setup(model)
  params = variables["params"]
  gating = _tiny_resnet_gating()
  groups = _groups(model, variables, IMG)
  scores = structured.group_scores("magnitude", model, variables, example_input=_example(IMG))
  for label, name in _label_to_group(groups, gating).items():
    kernels = [p for p, lab in gating.items() if lab == label and p.endswith("kernel")]
    l1 = sum(np.abs(_leaf(params, p)).reshape(-1, scores[name].size).sum(0) for p in kernels)
    np.testing.assert_allclose(scores[name], l1, rtol=1e-5)
  r1, r2 = (structured.group_scores("random", model, variables, example_input=_example(IMG),
                                    key=jax.random.key(0)) for _ in range(2))
  assert all(np.array_equal(r1[k], r2[k]) and ((0 <= r1[k]) & (r1[k] < 1)).all() for k in r1)


# --- Tools, integration, errors. -------------------------------------------------------------

def test_masks_work_with_existing_mask_tools(tmp_path):
  model, shape = MODELS["vgg"]()
  variables, _ = _setup(model, shape)
  params = variables["params"]
  masks = _random_masks(model, variables, shape)
  masks_lib.check_masks(params, masks)
  assert all(m.dtype == jnp.bool_ for m in jax.tree.leaves(masks))
  updates, _ = keep_masked(masks).update(jax.tree.map(jnp.ones_like, params),
                                         keep_masked(masks).init(params))
  np.testing.assert_array_equal(updates["conv2"]["bn"]["bias"],
                                _channel_mask(masks, "conv2/bn/bias").astype(np.float32))
  masks_lib.save_masks(tmp_path / "m.npz", masks)
  loaded = masks_lib.load_masks(tmp_path / "m.npz", params)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(masks)))


def test_prune_at_init_uses_structured_prune():
  config = ml_collections.ConfigDict({"prune": {
      "method": "magnitude", "structured": True, "sparsity": 0.5, "min_kept_per_layer": 1,
      "allocation": "global", "exclude": (), "batch_size": 4, "num_batches": 1,
      "num_steps": 1, "batchnorm_mode": None, "sanity_check": None}})
  model, shape = MODELS["small_convnet"]()
  variables, _ = _setup(model, shape)
  masks = train.prune_at_init(prune_config.plan(config.prune), model, variables, shape,
                              jax.random.key(0))
  expected = structured.structured_prune("magnitude", model, variables, None, 0.5,
                                         example_input=_example(shape), min_kept_per_group=1)
  assert all(np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(expected)))
  assert sum(int(np.asarray(m).sum()) for m in (
      masks[f"conv{i}"]["bn"]["scale"] for i in range(1, 5))) == round(0.5 * (16 + 32 + 64 + 64))


def test_unsupported_method_is_a_clear_error():
  model, shape = MODELS["vgg"]()
  variables, batch = _setup(model, shape)
  for method in ("grasp", "synflow", "force", "nonsense"):
    with pytest.raises(ValueError, match="no structured .*form.*prospr"):
      structured.structured_prune(method, model, variables, batch, 0.5)
  assert set(structured.structured_methods()) < set(registry.METHODS)
  with pytest.raises(ValueError, match="needs \\['key'\\]"):
    structured.structured_prune("random", model, variables, None, 0.5, example_input=_example(shape))
  with pytest.raises(ValueError, match="needs \\['batches'\\]"):
    structured.structured_prune("snip", model, variables, None, 0.5, example_input=_example(shape))
  with pytest.raises(ValueError, match="example_input"):
    structured.structured_prune("magnitude", model, variables, None, 0.5)
  with pytest.raises(ValueError, match="sparsity=1.0"):
    structured.structured_prune("magnitude", model, variables, None, 1.0)
  with pytest.raises(ValueError, match="allocation 'global' or 'uniform', not 'erk'"):
    structured.structured_prune("magnitude", model, variables, None, 0.5, allocation="erk")
  with pytest.raises(ValueError, match=r"'snip' has no option\(s\) \['num_steps'\]: it takes no"):
    structured.structured_prune("snip", model, variables, batch, 0.5, num_steps=1)
  with pytest.raises(ValueError, match=r"'prospr' has no option\(s\) \['num_stepz'\]: its options"):
    structured.structured_prune("prospr", model, variables, batch, 0.5, num_stepz=1)
  with pytest.raises(TypeError, match="sparsity must be a number"):
    structured.structured_prune("magnitude", model, variables, None, "half")
  int_variables = {**variables, "params": jax.tree.map(lambda p: p.astype(jnp.int32),
                                                       variables["params"])}
  with pytest.raises(TypeError, match="not floating point"):
    structured.structured_prune("magnitude", model, int_variables, None, 0.5,
                                example_input=_example(shape))


def test_lenet5_flatten_groups():
  """LeNet-5, which the name-based version refused: conv2's 16 channels are read by fc1 after a
  flatten of the 5x5x16 map, so each channel owns 25 rows of fc1 (row = 16 * position + c)."""
  model, shape = get_model("lenet5", 10), (28, 28, 1)
  variables, batch = _setup(model, shape)
  groups = {g.name: g for g in _groups(model, variables, shape)}
  assert list(groups) == ["conv1", "conv2", "fc1", "fc2"]
  assert _as_sets(groups.values()) == {
      "conv1": ({"conv1/kernel", "conv1/bias"}, {"conv2/kernel"}),
      "conv2": ({"conv2/kernel", "conv2/bias"}, {"fc1/kernel"}),
      "fc1": ({"fc1/kernel", "fc1/bias"}, {"fc2/kernel"}),
      "fc2": ({"fc2/kernel", "fc2/bias"}, {"head/kernel"}),
  }
  (fc1,) = groups["conv2"].consumers
  np.testing.assert_array_equal(fc1.index, np.arange(16)[:, None] + 16 * np.arange(25))
  masks = _random_masks(model, variables, shape)
  small = structured.compact(model, variables, masks, batch["image"])
  np.testing.assert_allclose(small(batch["image"]), eval_logits(model, masked_variables(variables, masks),
                                                           batch["image"]), rtol=1e-5, atol=1e-5)


def test_compacting_non_group_masks_is_a_clear_error():
  model, shape = MODELS["vgg"]()
  variables, _ = _setup(model, shape)
  masks = _random_masks(model, variables, shape)
  kept = int(np.argmax(_channel_mask(masks, "conv2/bn/scale")))
  masks["conv2"]["bn"]["bias"] = masks["conv2"]["bn"]["bias"].at[kept].set(False)
  with pytest.raises(ValueError, match="conv2/conv.*not channel-group masks"):
    zoo_compaction.compact(model, variables, masks, _example(shape))
  masks = jax.tree.map(jnp.ones_like, masks)
  masks["conv3"] = jax.tree.map(jnp.zeros_like, masks["conv3"])
  with pytest.raises(ValueError, match="'conv3/conv' keeps no channel"):
    structured.compact(model, variables, masks, _example(shape))
