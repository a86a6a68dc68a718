"""Tests for the model zoo: shapes, parameter counts, BatchNorm state, names."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prospr_jax.models import MODEL_NAMES, get_model, init_variables
from prospr_jax.models.convnet import max_pool_2x2
from prospr_jax.models.resnet import zero_pad_shortcut

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)


def _abstract_variables(model: nn.Module, input_shape: tuple[int, ...], batch: int = 2):
  """Variable shapes of `model.init` on a `[batch, *input_shape]` input, without computing them."""
  x = jnp.zeros((batch, *input_shape), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _paths(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(v.shape) for p, v in flat}


# --- Independent, hand-written parameter formulas (PyTorch layer conventions). -------------

def _dense(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def _conv_bn(c_in: int, c_out: int, k: int = 3) -> int:
  """Bias-free k x k conv followed by BatchNorm (scale + bias)."""
  return k * k * c_in * c_out + 2 * c_out


def _vgg_params(widths: list[int], in_ch: int, num_classes: int) -> int:
  total, c = 0, in_ch
  for w in widths:
    total += _conv_bn(c, w)
    c = w
  return total + _dense(c, num_classes)


def _basic_resnet_params(stage_sizes, widths, in_ch: int, num_classes: int) -> int:
  """Small-input ResNet with BasicBlocks and option-B (1x1 conv + BN) projection shortcuts."""
  total = _conv_bn(in_ch, widths[0])  # 3x3 stem
  c = widths[0]
  for n, w in zip(stage_sizes, widths):
    for _ in range(n):
      total += _conv_bn(c, w) + _conv_bn(w, w)
      if c != w:
        total += _conv_bn(c, w, k=1)
      c = w
  return total + _dense(c, num_classes)


# --- Parameter counts. -----------------------------------------------------------------------

_VGG16 = [64, 64, 128, 128, 256, 256, 256] + [512] * 6  # conv widths

@pytest.mark.parametrize(
    "name, input_shape, num_classes, expected",
    [
        ("lenet300100", MNIST, 10, 266_610),  # LeCun et al. 1998
        ("lenet300100", MNIST, 10, _dense(784, 300) + _dense(300, 100) + _dense(100, 10)),
        ("lenet5", MNIST, 10,
         (5 * 5 * 1 * 6 + 6) + (5 * 5 * 6 * 16 + 16) + _dense(16 * 5 * 5, 120)
         + _dense(120, 84) + _dense(84, 10)),
        ("lenet5", CIFAR, 10,  # conv1 pads 2: 32 -> pool 16 -> conv2 12 -> pool 6
         (5 * 5 * 3 * 6 + 6) + (5 * 5 * 6 * 16 + 16) + _dense(16 * 6 * 6, 120)
         + _dense(120, 84) + _dense(84, 10)),
        ("small_convnet", MNIST, 10,
         _conv_bn(1, 16) + _conv_bn(16, 32) + _conv_bn(32, 64) + _conv_bn(64, 64)
         + _dense(64, 10)),
        ("vgg11", CIFAR, 10, _vgg_params([64, 128, 256, 256] + [512] * 4, 3, 10)),
        ("vgg16", CIFAR, 10, _vgg_params(_VGG16, 3, 10)),
        ("vgg19", CIFAR, 100,
         _vgg_params([64, 64, 128, 128] + [256] * 4 + [512] * 8, 3, 100)),
        # Option A (no shortcut params) gives the published 269,722 (0.27M); option B adds the
        # 1x1 conv + BN projections 16->32 and 32->64.
        ("resnet20", CIFAR, 10, 269_722 + _conv_bn(16, 32, k=1) + _conv_bn(32, 64, k=1)),
        ("resnet20", CIFAR, 10, _basic_resnet_params((3, 3, 3), (16, 32, 64), 3, 10)),
        ("resnet32", CIFAR, 10, _basic_resnet_params((5, 5, 5), (16, 32, 64), 3, 10)),
        ("resnet56", CIFAR, 10, _basic_resnet_params((9, 9, 9), (16, 32, 64), 3, 10)),
        ("resnet20_prospr", CIFAR, 10, 269_722),  # option A: no shortcut params
        ("resnet20_prospr", CIFAR, 10, _basic_resnet_params((3, 3, 3), (16, 32, 64), 3, 10)
         - _conv_bn(16, 32, k=1) - _conv_bn(32, 64, k=1)),
        # The authors' VGG-16: the zoo's layers plus a bias on each of the 13 convs.
        ("vgg16_prospr", CIFAR, 10, _vgg_params(_VGG16, 3, 10) + sum(_VGG16)),
        ("resnet18_prospr", (64, 64, 3), 200,
         _basic_resnet_params((2, 2, 2, 2), (64, 128, 256, 512), 3, 200)),
        ("resnet18", CIFAR, 10, 11_173_962),
        ("resnet18", CIFAR, 10,
         _basic_resnet_params((2, 2, 2, 2), (64, 128, 256, 512), 3, 10)),
        ("resnet50", IMAGENET, 1000, 25_557_032),  # torchvision resnet50
    ],
)
def test_param_counts(name, input_shape, num_classes, expected):
  variables = _abstract_variables(get_model(name, num_classes), input_shape)
  assert _count(variables["params"]) == expected


def test_well_known_sizes():
  vgg16 = _count(_abstract_variables(get_model("vgg16", 10), CIFAR)["params"])
  assert round(vgg16 / 1e6, 1) == 14.7
  resnet20 = _count(_abstract_variables(get_model("resnet20", 10), CIFAR)["params"])
  assert round(resnet20 / 1e6, 2) == 0.27
  resnet18 = _count(_abstract_variables(get_model("resnet18", 10), CIFAR)["params"])
  assert round(resnet18 / 1e6, 1) == 11.2


# --- Output shapes and structure. ------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_abstract_forward_shape_and_param_layout(name):
  input_shape = {"lenet300100": MNIST, "lenet5": MNIST, "small_convnet": MNIST,
                 "resnet50": IMAGENET}.get(name, CIFAR)
  model = get_model(name, 7)
  assert model.num_classes == 7
  x = jax.ShapeDtypeStruct((3, *input_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32

  params = _paths(variables["params"])
  assert params["head/kernel"][-1] == 7 and params["head/bias"] == (7,)
  for path, shape in params.items():
    # Only conv/dense kernels have ndim > 1 (the pruning code relies on it).
    assert (len(shape) > 1) == path.endswith("/kernel"), path
  has_bn = any(p.endswith("/scale") for p in params)
  assert ("batch_stats" in variables) == has_bn
  conv_biases = [p for p in params if p.endswith("/bias") and "bn" not in p.split("/")[-2]
                 and not p.startswith("head/")]
  if name == "vgg16_prospr":  # the authors' (torchvision's) convs keep their biases
    assert len(conv_biases) == 13
  elif has_bn:  # convs feeding a BatchNorm carry no bias
    assert not conv_biases


def test_input_size_taken_from_data():
  for name in ("vgg16", "vgg16_prospr"):
    for shape in [(64, 64, 3), (32, 32, 3)]:
      variables = _abstract_variables(get_model(name, 200), shape)
      assert _paths(variables["params"])["head/kernel"] == (512, 200)
  # LeNet-5 flattens whatever the conv stack produces.
  assert _paths(_abstract_variables(get_model("lenet5", 10), CIFAR)["params"])["fc1/kernel"] == (
      576, 120)


def test_resnet_shortcuts():
  r20 = _paths(_abstract_variables(get_model("resnet20", 10), CIFAR)["params"])
  assert "stage1_block0/shortcut_conv/kernel" not in r20  # 16 -> 16, stride 1: identity
  assert r20["stage2_block0/shortcut_conv/kernel"] == (1, 1, 16, 32)
  assert r20["stage2_block0/shortcut_bn/scale"] == (32,)
  assert r20["stage3_block0/shortcut_conv/kernel"] == (1, 1, 32, 64)
  assert sum("shortcut_conv" in p for p in r20) == 2
  assert r20["stem_conv/kernel"] == (3, 3, 3, 16)

  r20a = _paths(_abstract_variables(get_model("resnet20_prospr", 10), CIFAR)["params"])
  assert not any("shortcut" in p for p in r20a)  # option A: parameter-free
  assert set(r20a) == {p for p in r20 if "shortcut" not in p}

  r50 = _paths(_abstract_variables(get_model("resnet50", 1000), IMAGENET)["params"])
  assert r50["stem_conv/kernel"] == (7, 7, 3, 64)
  assert r50["stage1_block0/shortcut_conv/kernel"] == (1, 1, 64, 256)  # channel change
  assert r50["stage2_block0/conv2/kernel"] == (3, 3, 128, 128)
  assert r50["stage4_block2/conv3/kernel"] == (1, 1, 512, 2048)
  assert sum("shortcut_conv" in p for p in r50) == 4
  assert r50["head/kernel"] == (2048, 1000)


# --- Option-A shortcut. ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "shape, out_features, strides, before",
    [((2, 8, 8, 16), 32, 2, 8),  # the CIFAR ResNets: planes // 4 = 8 zero channels each side
     ((1, 5, 7, 3), 8, 2, 2),  # odd sizes: rows/cols 0, 2, 4 (and 6); 2 zeros before, 3 after
     ((1, 4, 4, 2), 2, 1, 0)])  # identity
def test_zero_pad_shortcut_matches_numpy(shape, out_features, strides, before):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  b, h, w, c = shape
  rows, cols = range(0, h, strides), range(0, w, strides)
  expected = np.zeros((b, len(rows), len(cols), out_features), np.float32)
  for i, r in enumerate(rows):
    for j, col in enumerate(cols):
      expected[:, i, j, before:before + c] = x[:, r, col, :]
  np.testing.assert_array_equal(zero_pad_shortcut(jnp.asarray(x), out_features, strides),
                                expected)


def test_zero_pad_shortcut_cannot_drop_channels():
  with pytest.raises(ValueError, match="cannot map 4 to 2 channels"):
    zero_pad_shortcut(jnp.zeros((1, 2, 2, 4)), 2, 1)


# --- Real forward passes for the small models. -----------------------------------------------

@pytest.mark.parametrize(
    "name, input_shape",
    [("lenet300100", MNIST), ("lenet5", MNIST)],
)
def test_forward_small_models(name, input_shape):
  model = get_model(name, 10)
  x = jax.random.normal(jax.random.key(1), (2, *input_shape))
  variables = init_variables(model, jax.random.key(0), x.shape[1:])
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 10)
  assert np.all(np.isfinite(np.asarray(logits)))


def test_resnet20_train_forward_updates_batch_stats():
  model = get_model("resnet20", 10)
  x = jax.random.normal(jax.random.key(1), (2, *CIFAR)) * 3.0 + 1.0
  variables = init_variables(model, jax.random.key(0), x.shape[1:])
  apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
  logits, updates = apply(variables, x, train=True, mutable=("batch_stats",))
  assert logits.shape == (2, 10)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert not np.allclose(new["stem_bn"]["mean"], old["stem_bn"]["mean"])
  assert not np.allclose(new["stem_bn"]["var"], old["stem_bn"]["var"])
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))]
  assert all(changed)
  # Eval mode uses running statistics and needs no mutable collection.
  eval_logits = apply(variables, x, train=False)
  assert eval_logits.shape == (2, 10)
  assert not np.allclose(eval_logits, logits)


def test_small_convnet_train_and_eval_forward():
  model = get_model("small_convnet", 10)
  x = jax.random.normal(jax.random.key(1), (4, *MNIST))
  variables = init_variables(model, jax.random.key(0), x.shape[1:])
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (4, 10)
  # momentum 0.9 from the initial running mean 0: new mean = 0.1 * batch mean of conv1's output.
  conv1 = jax.lax.conv_general_dilated(
      x, variables["params"]["conv1"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(
      updates["batch_stats"]["conv1"]["bn"]["mean"], 0.1 * conv1.mean(axis=(0, 1, 2)),
      rtol=1e-4, atol=1e-6)
  eval_logits = model.apply(variables, x, train=False)
  assert eval_logits.shape == (4, 10)
  assert np.all(np.isfinite(np.asarray(eval_logits)))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_matches_flax(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


# --- Registry. -------------------------------------------------------------------------------

def test_model_names():
  assert set(MODEL_NAMES) == {"lenet300100", "lenet5", "small_convnet", "vgg11", "vgg16",
                              "vgg19", "vgg16_prospr", "resnet20", "resnet20_prospr",
                              "resnet32", "resnet56", "resnet18", "resnet18_prospr",
                              "resnet50"}


def test_a_model_built_twice_is_one_model():
  """Population training trains members of one model only: a zoo model built twice must
  compare equal (a fresh initializer closure per build, e.g. PyTorch's default bias, would
  make the authors' networks unequal to themselves)."""
  for name in MODEL_NAMES:
    assert get_model(name, 10) == get_model(name, 10), name
    assert get_model(name, 10) != get_model(name, 100), name


def test_unknown_model_name():
  with pytest.raises(ValueError, match="valid names") as info:
    get_model("resnet21", 10)
  assert "resnet21" in str(info.value)
  for name in MODEL_NAMES:
    assert name in str(info.value)
