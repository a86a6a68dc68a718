"""The paper configs build the ProsPr authors' networks: layers, parameter counts, init, outputs.

`reference/authors_models.json` was written by `reference/authors_models.py` from the
authors' PyTorch code (mil-ad/prospr; how to rerun it: its docstring). It lists, for each
paper config, every Conv2d / BatchNorm2d / Linear layer in forward-call order with its tensor
shapes and init moments, and the logits of a forward pass with every tensor set by
`reference/model_fill.py`. PyTorch is not needed here.
"""

from __future__ import annotations

import importlib
import json
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from prospr_jax.models import get_model, init_variables
from tests.reference import model_fill

FIXTURE = json.loads(
    (pathlib.Path(__file__).parent / "reference" / "authors_models.json").read_text())
PAPER_CONFIGS = tuple(FIXTURE["models"])
ONE_PER_ARCHITECTURE = ("cifar10_resnet20", "cifar10_vgg16", "tinyimagenet_resnet18")

_KINDS = {nn.Conv: "conv", nn.BatchNorm: "bn", nn.Dense: "linear"}
LeafPath = tuple[str, ...]
# Per layer kind, PyTorch tensor name -> (our collection, our leaf name).
_TORCH_TENSORS: dict[str, dict[str, tuple[str, str]]] = {
    "conv": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": {"weight": ("params", "scale"), "bias": ("params", "bias"),
           "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")},
}


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """PyTorch's layout of our shape: conv `[kh, kw, in, out] -> [out, in, kh, kw]`, dense
  `[in, out] -> [out, in]`, vectors unchanged."""
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape[::-1])


def _from_torch(values: np.ndarray) -> np.ndarray:
  """Our layout of a PyTorch tensor (the inverse of `_torch_shape`)."""
  return values.transpose(2, 3, 1, 0) if values.ndim == 4 else values.T


def _paper_model(config_name: str) -> tuple[nn.Module, dict, tuple[int, int, int]]:
  """The model the paper config builds, its fixture entry, and its input `(H, W, C)`."""
  config = importlib.import_module(f"configs.{config_name}").get_config()
  entry = FIXTURE["models"][config_name]
  c, h, w = entry["input_chw"]
  return get_model(config.model, entry["num_classes"]), entry, (h, w, c)


def _layers_in_call_order(model: nn.Module, variables, x) -> list[tuple[str, LeafPath]]:
  """`(kind, module path)` of every Conv / BatchNorm / Dense in `model.apply(x)` call order."""
  calls = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and type(context.module) in _KINDS:
      calls.append((_KINDS[type(context.module)], tuple(context.module.path)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  return calls


def _torch_view(model: nn.Module, variables, x) -> list[tuple[str, dict[str, tuple]]]:
  """Our layers as the fixture lists them: `(kind, {PyTorch name: (collection, leaf path)})`.

  Asserts that every variable leaf belongs to exactly one layer.
  """
  flat = {(c, *p) for c in variables for p in traverse_util.flatten_dict(variables[c])}
  layers, seen = [], set()
  for kind, path in _layers_in_call_order(model, variables, x):
    leaves = {name: (collection, (*path, leaf))
              for name, (collection, leaf) in _TORCH_TENSORS[kind].items()
              if (collection, *path, leaf) in flat}
    seen |= {(c, *p) for c, p in leaves.values()}
    layers.append((kind, leaves))
  assert seen == flat
  return layers


def _get(variables, collection: str, path: LeafPath):
  return traverse_util.flatten_dict(variables[collection])[path]


@pytest.mark.parametrize("config_name", PAPER_CONFIGS)
def test_paper_config_builds_the_authors_layers(config_name):
  model, entry, image = _paper_model(config_name)
  x = jnp.zeros((2, *image))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"])) == (
      entry["num_params"])
  ours = _torch_view(model, variables, x)
  assert [kind for kind, _ in ours] == [layer["kind"] for layer in entry["layers"]]
  for (kind, leaves), layer in zip(ours, entry["layers"]):
    assert set(leaves) == set(layer["shapes"]), layer["name"]
    for name, (collection, path) in leaves.items():
      shape = _torch_shape(_get(variables, collection, path).shape)
      assert list(shape) == layer["shapes"][name], (layer["name"], name)


@pytest.mark.parametrize("config_name", ONE_PER_ARCHITECTURE)
def test_paper_model_forward_matches_the_authors(config_name):
  """Every tensor set as in the fixture (PyTorch layout, transposed to ours), eval mode."""
  model, entry, image = _paper_model(config_name)
  x = model_fill.image((2, image[2], image[0], image[1])).transpose(0, 2, 3, 1)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  filled = {c: traverse_util.flatten_dict(variables[c]) for c in variables}
  for index, (_, leaves) in enumerate(_torch_view(model, variables, x)):
    for name, (collection, path) in leaves.items():
      values = model_fill.fill(_torch_shape(filled[collection][path].shape), index, name)
      filled[collection][path] = jnp.asarray(_from_torch(values), jnp.float32)
  variables = {c: traverse_util.unflatten_dict(leaves) for c, leaves in filled.items()}
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
  expected = np.asarray(entry["logits"])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("config_name", ONE_PER_ARCHITECTURE)
def test_paper_model_init_matches_the_authors(config_name):
  """Per tensor: constants equal; else mean and std agree, and the kurtosis where precise.

  Tolerances are ~5 standard errors for our single draw (the fixture pools 4 seeds); the
  kurtosis (normal 3.0, Flax's truncated normal 2.37, uniform 1.8) only for >= 10,000 values.
  The 'rbg' PRNG draws the same distributions as the default one and compiles ~5x faster.
  """
  model, entry, image = _paper_model(config_name)
  variables = init_variables(model, jax.random.key(0, impl="rbg"), image)
  checked_kurtosis = 0
  for (_, leaves), layer in zip(_torch_view(model, variables, jnp.zeros((1, *image))),
                                entry["layers"]):
    for name, expected in layer["init"].items():
      values = np.asarray(_get(variables, *leaves[name]), np.float64).ravel()
      where = f"{layer['name']}.{name}"
      if expected["std"] == 0:
        np.testing.assert_array_equal(values, expected["mean"], err_msg=where)
        continue
      n, std = values.size, values.std()
      assert abs(values.mean() - expected["mean"]) < 5 * expected["std"] / math.sqrt(n), where
      assert abs(std / expected["std"] - 1) < 4 / math.sqrt(n), where
      if n >= 10_000:
        kurtosis = np.mean((values - values.mean()) ** 4) / std**4
        assert abs(kurtosis - expected["kurtosis"]) < 0.3, where
        checked_kurtosis += 1
  assert checked_kurtosis >= 3


# Structured pruning and compaction of these networks: tests/test_structured_paper_models.py.
