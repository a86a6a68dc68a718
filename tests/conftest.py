"""Shared fixtures: tiny models and batches, float64 mode, and one prepared Fashion-MNIST."""

import fcntl
import functools
import math
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prospr_jax import masks as masks_lib


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled (finite differences need them)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope="session")
def fashion_mnist_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding `fashion_mnist_local`, prepared once for the whole test session.

  Preparing the records from Debian's IDX files takes ~10-20 s; every pytest-xdist worker
  shares one copy (prepared under a file lock in the session's common temporary directory).
  Tests only read it.
  """
  from prospr_jax.experiment.data import get_dataset_info  # pylint: disable=g-import-not-at-top (TF)

  base = tmp_path_factory.getbasetemp()
  # Under pytest-xdist each worker's base directory sits in the session's common one.
  root = pathlib.Path(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)
  with open(root / "fashion_mnist_tfds.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    get_dataset_info("fashion_mnist", str(root / "fashion_mnist_tfds"))
  return str(root / "fashion_mnist_tfds")


def mlp_apply(params, x):
  """Two-layer tanh MLP used by several tests: x [B, D] -> logits [B, C]."""
  h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
  return h @ params["l2"]["kernel"] + params["l2"]["bias"]


def mlp_loss(params, batch):
  """Plain `loss_fn(params, batch)`: mean cross-entropy of `mlp_apply`."""
  logits = mlp_apply(params, batch["image"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def mlp_params(key, dims=(6, 5, 3), dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "l1": {"kernel": jax.random.normal(k1, dims[:2], dtype) / dims[0] ** 0.5,
             "bias": 0.1 * jax.random.normal(k3, (dims[1],), dtype)},
      "l2": {"kernel": jax.random.normal(k2, dims[1:], dtype) / dims[1] ** 0.5,
             "bias": jnp.zeros((dims[2],), dtype)},
  }


def make_batches(key, n, batch_size=8, shape=(6,), num_classes=3, dtype=jnp.float32):
  """`n` random classification batches `{'image': [B, *shape], 'label': [B]}`."""
  keys = jax.random.split(key, n)
  return [
      {"image": jax.random.normal(k, (batch_size, *shape), dtype),
       "label": jax.random.randint(jax.random.fold_in(k, 1), (batch_size,), 0, num_classes)}
      for k in keys
  ]


class TinyBNCNN(nn.Module):
  """conv3x3(4) -> BatchNorm -> ReLU -> conv3x3(4) -> mean pool -> dense `head`."""

  num_classes: int = 3

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(self.num_classes, name="head")(x.mean(axis=(1, 2)))


def random_variables(model: nn.Module, shape, seed: int = 0):
  """Variables of a linen zoo model (`model.init(..., train=False)` on `[1, *shape]` inputs)
  filled with numpy draws: no XLA compile of the init, fast.

  Kernels ~ N(0, 2 / fan_in); BN scale ~ U[0.5, 1.5], biases ~ N(0, 0.5); running mean
  ~ N(0, 0.5), var ~ U[0.5, 2]: eval-mode BN is far from the identity and every bias moves a
  zero channel off zero, so channel-pruning tests bite.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))

  def draw(path, leaf):
    name = masks_lib.path_str(path).rsplit("/", 1)[-1]
    if name == "kernel":
      std = math.sqrt(2 / math.prod(leaf.shape[:-1]))
      return rng.normal(0, std, leaf.shape).astype(np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5 if name == "scale" else 2.0, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.5, leaf.shape).astype(np.float32)  # bias, mean

  return jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(draw, shapes))


@functools.partial(jax.jit, static_argnums=0)
def eval_logits(model: nn.Module, variables, x: jax.Array) -> jax.Array:
  """`model.apply(variables, x, train=False)`, jitted (one compile instead of one per op)."""
  return model.apply(variables, x, train=False)


def masked_variables(variables, masks):
  """`variables` with the params multiplied by `masks`."""
  return {**variables, "params": masks_lib.apply_masks(variables["params"], masks)}
