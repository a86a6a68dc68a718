"""Structured pruning of the ProsPr authors' networks: `resnet20_prospr` (option-A shortcuts:
strided subsampling and zero channels, no shortcut params) and `vgg16_prospr` (conv biases).

The traced channel groups against hand-derived ones, structured ProsPr at 50% of the channels,
and compaction with outputs equal to the masked model's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import eval_logits, masked_variables, random_variables
from prospr_jax.models import zoo_compaction
from prospr_jax import structured
from prospr_jax.models import get_model

RESNET_SHAPE = (8, 8, 3)  # stage 3 at 2x2
VGG_SHAPE = (16, 16, 3)  # four pools: 1x1 before the global pool


def _abstract_variables(model, shape):
  """The variables' shapes (`jax.ShapeDtypeStruct`s): all that tracing the groups reads."""
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))


def _batches(shape, n=2, batch_size=4):
  keys = jax.random.split(jax.random.key(1), n)
  return [{"image": jax.random.normal(k, (batch_size, *shape)), "label": jnp.arange(batch_size)}
          for k in keys]


def _groups(model, variables, shape):
  example = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  return {g.name: g for g in structured.trace_model(model, variables, example).groups}


def _slots(slots) -> dict[str, list[int]]:
  """`{path: the first position of each channel}` (every slot here has one position per
  channel)."""
  out = {}
  for s in slots:
    assert s.index.shape[1] == 1, s.path
    out[s.path] = s.index[:, 0].tolist()
  return out


# --- ResNet-20 with option-A shortcuts. -------------------------------------------------------

def _resnet20_prospr_expected():
  """Hand-derived groups of `resnet20_prospr`: `{name: (members, consumers)}`, each
  `{path: positions}` (the position of each channel of the group, in order).

  The stream of stage s has `16 * 2**(s-1)` channels. Block 0 of stages 2 and 3 pads its input
  (the previous stream) with `w / 4` zero channels on each side, so stream position `p` of stage
  s is position `p + w / 4` of stage s + 1 (w: that stage's width), and the padded positions
  `[0, w/4)` and `[3w/4, w)` have no producer but the block's `conv2`/`bn2` (the shortcut adds
  zeros there). Hence three residual groups, each the channels that enter the network at one
  stage, followed through the later stages:

    stem_conv (16):           stage 1 p; stage 2 8 + p;             stage 3 24 + p
    stage2_block0/conv2 (16): stage 2 P2 = [0, 8) + [24, 32);        stage 3 16 + P2
    stage3_block0/conv2 (32): stage 3 [0, 16) + [48, 64)

  Every block's conv1/bn1 is a group of its own, read by its conv2. A stream is read by the
  conv1 of every block it enters (at the stream positions) and finally by the head.
  """
  width = {1: 16, 2: 32, 3: 64}
  block = lambda s, b: f"stage{s}_block{b}"
  # For each residual group: its positions in the stream of each stage it lives in.
  streams = {
      "stem_conv": {1: list(range(16)), 2: list(range(8, 24)), 3: list(range(24, 40))},
      "stage2_block0/conv2": {2: [*range(8), *range(24, 32)],
                              3: [16 + p for p in [*range(8), *range(24, 32)]]},
      "stage3_block0/conv2": {3: [*range(16), *range(48, 64)]},
  }
  expected = {}
  for name, positions in streams.items():
    members, consumers = {}, {}
    if name == "stem_conv":
      members = {"stem_conv/kernel": positions[1], "stem_bn/scale": positions[1],
                 "stem_bn/bias": positions[1]}
    for s, p in positions.items():
      for b in range(3):
        for leaf in ("conv2/kernel", "bn2/scale", "bn2/bias"):
          members[f"{block(s, b)}/{leaf}"] = p
        # Block b of stage s reads the stream: the previous stage's for b = 0, s > 1.
        if b > 0 or s == 1:
          consumers[f"{block(s, b)}/conv1/kernel"] = p
      if s < 3:
        consumers[f"{block(s + 1, 0)}/conv1/kernel"] = p
    consumers["head/kernel"] = positions[3]
    expected[name] = (members, consumers)
  for s in (1, 2, 3):
    for b in range(3):
      channels = list(range(width[s]))
      expected[f"{block(s, b)}/conv1"] = (
          {f"{block(s, b)}/conv1/kernel": channels, f"{block(s, b)}/bn1/scale": channels,
           f"{block(s, b)}/bn1/bias": channels},
          {f"{block(s, b)}/conv2/kernel": channels})
  return expected


def test_resnet20_prospr_groups_follow_the_zero_padded_shortcuts():
  model = get_model("resnet20_prospr", 10)
  variables = _abstract_variables(model, RESNET_SHAPE)
  groups = _groups(model, variables, RESNET_SHAPE)
  got = {name: (_slots(g.members), _slots(g.consumers)) for name, g in groups.items()}
  assert got == _resnet20_prospr_expected()
  # Each block's output channels (its conv2/bn2 outputs) are split between the residual
  # groups: every position exactly once, so the groups' channels add up to the widths.
  for s, n in ((1, 16), (2, 32), (3, 64)):
    owned = sorted(p for g in got.values() for path, ps in g[0].items()
                   if path == f"stage{s}_block2/bn2/scale" for p in ps)
    assert owned == list(range(n))
  # BatchNorm statistics ('batch_stats/<bn>/mean', '.../var') are sliced with their scale.
  for g in groups.values():
    state = {s.path: s.index[:, 0].tolist() for s in g.state}
    scales = {m.path: m.index[:, 0].tolist() for m in g.members if m.path.endswith("scale")}
    assert state == {f"batch_stats/{path[:-len('scale')]}{stat}": positions
                     for path, positions in scales.items() for stat in ("mean", "var")}


def _kept(masks, params, path) -> np.ndarray:
  """Bool per output channel of a params leaf: whether any of its entries is kept."""
  leaf = functools.reduce(lambda t, k: t[k], path.split("/"), params)
  mask = functools.reduce(lambda t, k: t[k], path.split("/"), masks)
  full = np.broadcast_to(np.asarray(mask), leaf.shape)
  return full.reshape(-1, leaf.shape[-1]).any(axis=0)


def _prospr_masks(model, variables, batches):
  return structured.structured_prune(
      "prospr", model, variables, batches, 0.5, min_kept_per_group=1, num_steps=1,
      optimizer=optax.sgd(0.05))


def _check_compaction(model, variables, masks, x):
  """The compacted program's outputs equal the masked model's; it is smaller; pruning mattered."""
  small = structured.compact(model, variables, masks, x)
  masked = eval_logits(model, masked_variables(variables, masks), x)
  np.testing.assert_allclose(small(x), masked, rtol=1e-5, atol=1e-5)
  assert not np.allclose(eval_logits(model, variables, x), masked, atol=1e-3)
  report = small.report
  assert report.params_after < report.params_before
  assert report.params_before == structured.count_params(variables["params"])
  assert report.macs_after < report.macs_before
  return small


def test_resnet20_prospr_structured_prospr_and_compaction():
  model = get_model("resnet20_prospr", 10)
  variables = random_variables(model, RESNET_SHAPE)
  batches = _batches(RESNET_SHAPE)
  masks = _prospr_masks(model, variables, batches)
  params = variables["params"]
  groups = _groups(model, variables, RESNET_SHAPE)
  keep = structured.channels_from_masks(params, list(groups.values()), masks)
  total = structured.num_channels(groups.values())
  assert sum(int(k.sum()) for k in keep.values()) == round(0.5 * total)
  # No residual addition mixes a pruned and a kept channel: the shortcut's channels (the
  # previous stream, in the middle after zero-padding) are kept exactly where conv2 keeps them.
  stream = _kept(masks, params, "stem_bn/scale")
  for s in (1, 2, 3):
    for b in range(3):
      out = _kept(masks, params, f"stage{s}_block{b}/bn2/scale")
      pad = (len(out) - len(stream)) // 2
      np.testing.assert_array_equal(out[pad:pad + len(stream)], stream, err_msg=(s, b))
      np.testing.assert_array_equal(_kept(masks, params, f"stage{s}_block{b}/conv2/kernel"),
                                    out)
      stream = out
  assert not stream.all()  # the test bites: the last stream lost channels
  _check_compaction(model, variables, masks, batches[1]["image"])


def test_resnet20_prospr_zoo_compaction_is_refused_with_the_program_alternative():
  model = get_model("resnet20_prospr", 10)
  variables = random_variables(model, RESNET_SHAPE)
  masks = jax.tree.map(lambda p: np.ones(p.shape, bool), variables["params"])
  x = _batches(RESNET_SHAPE)[0]["image"]
  with pytest.raises(zoo_compaction.UnsupportedModelError,
                     match=r"'zero_pad' shortcuts.*structured\.compact"):
    zoo_compaction.compact(model, variables, masks, x)
  with pytest.raises(zoo_compaction.UnsupportedModelError):
    zoo_compaction.model_spec(model)


# --- VGG-16 with conv biases. -----------------------------------------------------------------

def test_vgg16_prospr_groups_hold_the_conv_biases():
  model = get_model("vgg16_prospr", 10)
  variables = _abstract_variables(model, VGG_SHAPE)
  groups = _groups(model, variables, VGG_SHAPE)
  widths = [w for w in model.config if w != "M"]
  assert list(groups) == [f"conv{i}/conv" for i in range(1, 14)]
  for i, (g, width) in enumerate(zip(groups.values(), widths), start=1):
    channels = list(range(width))
    assert (_slots(g.members), _slots(g.consumers)) == (
        {f"conv{i}/conv/kernel": channels, f"conv{i}/conv/bias": channels,
         f"conv{i}/bn/scale": channels, f"conv{i}/bn/bias": channels},
        {f"conv{i + 1}/conv/kernel" if i < 13 else "head/kernel": channels})


def test_vgg16_prospr_structured_prospr_and_compaction(tmp_path):
  model = get_model("vgg16_prospr", 10)
  variables = random_variables(model, VGG_SHAPE)
  batches = _batches(VGG_SHAPE)
  masks = _prospr_masks(model, variables, batches)
  params = variables["params"]
  for i in range(1, 14):  # the bias is gated with its conv's output channels
    kernel = _kept(masks, params, f"conv{i}/conv/kernel")
    np.testing.assert_array_equal(_kept(masks, params, f"conv{i}/conv/bias"), kernel)
  x = batches[1]["image"]
  small = _check_compaction(model, variables, masks, x)
  for i in range(1, 14):  # compaction sliced the biases
    kept = int(_kept(masks, params, f"conv{i}/conv/kernel").sum())
    assert small.params[f"conv{i}"]["conv"]["bias"].shape == (kept,)
  # The zoo's constructor-based compaction: a smaller vgg16_prospr (conv biases kept) that
  # saves and loads.
  zoo_model, zoo_variables = zoo_compaction.compact(model, variables, masks, x)
  assert zoo_model.conv_bias
  zoo_compaction.save(tmp_path, zoo_model, zoo_variables)
  loaded, loaded_variables = zoo_compaction.load(tmp_path)
  np.testing.assert_allclose(eval_logits(loaded, loaded_variables, x), small(x), rtol=1e-5,
                             atol=1e-5)


def test_resnet18_prospr_has_the_groups_of_the_zoo_resnet18():
  """Same layers as the zoo's resnet18 (option-B shortcuts), so the same channel groups and
  compacted architecture."""
  shape = (16, 16, 3)
  groups = {}
  for name in ("resnet18", "resnet18_prospr"):
    model = get_model(name, 200)
    groups[name] = {n: (_slots(g.members), _slots(g.consumers))
                    for n, g in _groups(model, _abstract_variables(model, shape), shape).items()}
  assert groups["resnet18_prospr"] == groups["resnet18"]
  assert zoo_compaction.model_spec(get_model("resnet18_prospr", 200)) == zoo_compaction.model_spec(
      get_model("resnet18", 200))
