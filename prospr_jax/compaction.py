"""Compaction: turn a channel-masked network into a smaller dense one with the same outputs.

From a (trained) VGG, SmallConvNet or ResNet with channel-group masks (`structured.py`),
`compact` builds a model with fewer channels per layer and its variables: for every channel
group the pruned output channels of its members (conv kernels, BN scale/bias and BN
`mean`/`var`) are removed, and the matching input channels of its consumers (the next convs,
the shortcut convs, the `head`). A pruned channel is exactly 0 in the masked network (its
BN scale and bias are masked), so in eval mode the compacted model's logits equal the masked
model's up to float rounding.

Compacted models are a `VGG` (`config` with the kept widths; a SmallConvNet is the VGG plan
`SMALL_CONVNET_PLAN`) or a `ResNet` with `stem_width` / `block_widths`. `save` writes the
architecture as JSON and the variables as Flax msgpack; `load` reads them back.

Not supported (`UnsupportedModelError`): VGGs with conv biases (`vgg16_prospr`) and ResNets
with zero-padding shortcuts (`resnet20_prospr`), which have no channel groups.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from prospr_jax import masks as masks_lib
from prospr_jax import structured
from prospr_jax.models.convnet import SmallConvNet
from prospr_jax.models.resnet import BasicBlock, Bottleneck, ResNet
from prospr_jax.models.vgg import VGG
from prospr_jax.structured import IN_AXIS, OUT_AXIS, ChannelGroup, ParamPath

PyTree = Any

SMALL_CONVNET_PLAN: tuple[int | str, ...] = (16, "M", 32, "M", 64, 64)
"""`SmallConvNet` as a VGG layer plan (same module names, pools and head)."""

SPEC_FILE = "model.json"
VARIABLES_FILE = "variables.msgpack"
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
_apply_masks = jax.jit(masks_lib.apply_masks)  # one compile instead of one per leaf shape


class UnsupportedModelError(ValueError):
  """The model is of a supported class but with a feature compaction does not handle."""


def check_supported(model: nn.Module) -> None:
  """Raises `UnsupportedModelError` for a conv-bias VGG or a zero-padding-shortcut ResNet."""
  if isinstance(model, VGG) and model.conv_bias:
    raise UnsupportedModelError(
        "Compaction does not support VGGs with conv biases (conv_bias=True, e.g. vgg16_prospr): "
        "their channel groups would have to slice the biases too.")
  if isinstance(model, ResNet) and model.shortcut != "projection":
    raise UnsupportedModelError(
        f"Compaction does not support ResNets with {model.shortcut!r} shortcuts (e.g. "
        "resnet20_prospr): a zero-padding shortcut couples only some channels of its block.")


def _plan(model: nn.Module) -> tuple[int | str, ...]:
  """The VGG layer plan of a conv-chain model."""
  if isinstance(model, VGG):
    return tuple(model.config)
  if isinstance(model, SmallConvNet):
    return SMALL_CONVNET_PLAN
  raise TypeError(f"{type(model).__name__} is not a conv chain (VGG or SmallConvNet).")


def _block_names(model: ResNet) -> list[str]:
  """Block module names in network order."""
  return [f"stage{s + 1}_block{b}" for s, n in enumerate(model.stage_sizes) for b in range(n)]


def compact_model(model: nn.Module, widths: Mapping[ParamPath, int]) -> nn.Module:
  """The architecture of `model` with conv output widths from `widths`.

  Args:
    model: a `VGG`, `SmallConvNet` or `ResNet`.
    widths: `{conv kernel path: output channels}` for every conv, e.g.
      `{('conv1', 'conv', 'kernel'): 40, ...}`.

  Returns:
    A `VGG` for conv chains, else a `ResNet` with `stem_width` and `block_widths` set.

  Raises:
    UnsupportedModelError: see `check_supported`.
  """
  check_supported(model)
  if isinstance(model, ResNet):
    n_convs = 3 if model.block_cls is Bottleneck else 2
    return model.clone(
        stem_width=widths[("stem_conv", "kernel")],
        block_widths=tuple(
            tuple(widths[(name, f"conv{i}", "kernel")] for i in range(1, n_convs + 1))
            for name in _block_names(model)
        ),
    )
  plan, i = [], 0
  for layer in _plan(model):
    if layer != "M":
      i += 1
      layer = widths[(f"conv{i}", "conv", "kernel")]
    plan.append(layer)
  return VGG(model.num_classes, config=tuple(plan))


def _take(x: Any, index: np.ndarray, axis: int) -> np.ndarray:
  """`x`'s entries at `index` along `axis`, on the host (no per-shape XLA compile)."""
  return np.take(np.asarray(x), index, axis=axis)


def slice_variables(
    variables: PyTree, groups: Sequence[ChannelGroup], keep: Mapping[str, np.ndarray]
) -> PyTree:
  """Removes every group's pruned channels: members on `OUT_AXIS`, consumers on `IN_AXIS`.

  BatchNorm statistics (`mean`, `var` in any non-params collection) of a member BN are sliced
  like its `scale`. Returns a new variables dict of plain nested dicts of `jax.Array`s.
  """
  index = {g.name: np.flatnonzero(keep[g.name]) for g in groups}
  params = traverse_util.flatten_dict(variables["params"])
  bn_index: dict[ParamPath, np.ndarray] = {}
  for g in groups:
    for m in g.members:
      params[m] = _take(params[m], index[g.name], OUT_AXIS)
      if m[-1] == "scale":
        bn_index[m[:-1]] = index[g.name]
    for c in g.consumers:
      params[c] = _take(params[c], index[g.name], IN_AXIS)
  out = {"params": traverse_util.unflatten_dict(params)}
  for collection, tree in variables.items():
    if collection == "params":
      continue
    flat = traverse_util.flatten_dict(tree)
    out[collection] = traverse_util.unflatten_dict({
        path: _take(x, bn_index[path[:-1]], OUT_AXIS) if path[:-1] in bn_index else x
        for path, x in flat.items()
    })
  return jax.tree.map(jnp.asarray, out)


def compact(
    model: nn.Module, variables: PyTree, masks: PyTree
) -> tuple[nn.Module, PyTree]:
  """The compacted dense model of a channel-masked network, and its variables.

  Args:
    model: a `VGG`, `SmallConvNet` or `ResNet`.
    variables: `{'params': ..., 'batch_stats': ...}` (e.g. after masked training).
    masks: channel-group masks for the params (`structured.structured_prune`); the params
      are multiplied by them first.

  Returns:
    `(small_model, small_variables)` with `small_model.apply(small_variables, x, train=False)`
    equal to `model.apply({'params': apply_masks(params, masks), ...}, x, train=False)`.

  Raises:
    UnsupportedModelError: see `check_supported`.
    ValueError: if the masks are not channel-group masks or a group keeps no channel.
  """
  check_supported(model)
  params = _apply_masks(variables["params"], masks)
  groups = structured.derive_groups(params)
  keep = structured.channels_from_masks(params, groups, masks)
  widths = {m: int(keep[g.name].sum()) for g in groups for m in g.members if m[-1] == "kernel"}
  small = compact_model(model, widths)
  return small, slice_variables({**variables, "params": params}, groups, keep)


# --- Cost. ---------------------------------------------------------------------------------


def count_params(params: PyTree) -> int:
  """Number of entries of all leaves of `params`."""
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def conv_dense_macs(model: nn.Module, variables: PyTree, input_shape: Sequence[int]) -> int:
  """Multiply-accumulates of one example `[*input_shape]` through every `nn.Conv`/`nn.Dense`.

  Each layer counts `output positions x kernel entries` (`H_out * W_out * kh * kw * in * out`
  for a conv, `in * out` for a dense layer); BatchNorm, activations, pooling are not counted.
  Computed from shapes only (`jax.eval_shape` with `nn.intercept_methods`).
  """
  macs: list[int] = []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
      kernel = module.variables["params"]["kernel"]
      macs.append(math.prod(y.shape[1:-1]) * math.prod(kernel.shape))
    return y

  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return sum(macs)


# --- Saving and loading. -------------------------------------------------------------------


def model_spec(model: nn.Module) -> dict[str, Any]:
  """A JSON-able description of a `VGG`, `SmallConvNet` (as its VGG plan) or `ResNet`.

  Initializers are not stored (they only matter for a fresh `init`). Raises
  `UnsupportedModelError` for the models `check_supported` refuses, whose spec would load as
  a different network.
  """
  check_supported(model)
  if isinstance(model, ResNet):
    block = next(k for k, v in _BLOCKS.items() if v is model.block_cls)
    return {
        "architecture": "resnet", "num_classes": model.num_classes,
        "stage_sizes": list(model.stage_sizes), "stage_features": list(model.stage_features),
        "block": block, "stem": model.stem, "stem_width": model.stem_width,
        "block_widths": (None if model.block_widths is None
                         else [list(w) for w in model.block_widths]),
    }
  return {"architecture": "vgg", "num_classes": model.num_classes, "config": list(_plan(model))}


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
  """The model described by `model_spec`."""
  if spec["architecture"] == "vgg":
    return VGG(spec["num_classes"], config=tuple(spec["config"]))
  if spec["architecture"] == "resnet":
    block_widths = spec["block_widths"]
    return ResNet(
        spec["num_classes"], stage_sizes=tuple(spec["stage_sizes"]),
        stage_features=tuple(spec["stage_features"]), block_cls=_BLOCKS[spec["block"]],
        stem=spec["stem"], stem_width=spec["stem_width"],
        block_widths=None if block_widths is None else tuple(map(tuple, block_widths)),
    )
  raise ValueError(f"Unknown architecture {spec['architecture']!r} in the model spec.")


def save(directory: str | os.PathLike, model: nn.Module, variables: PyTree) -> None:
  """Writes `model.json` (`model_spec`) and `variables.msgpack` (Flax msgpack) to `directory`."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, SPEC_FILE), "w") as f:
    json.dump(model_spec(model), f, indent=2)
  with open(os.path.join(directory, VARIABLES_FILE), "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(variables)))


def load(directory: str | os.PathLike) -> tuple[nn.Module, PyTree]:
  """Reads a model saved by `save`: returns `(model, variables)`."""
  with open(os.path.join(directory, SPEC_FILE)) as f:
    model = model_from_spec(json.load(f))
  with open(os.path.join(directory, VARIABLES_FILE), "rb") as f:
    variables = flax.serialization.msgpack_restore(f.read())
  return model, jax.tree.map(jnp.asarray, variables)
