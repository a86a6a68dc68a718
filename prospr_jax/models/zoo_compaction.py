"""Compaction of the model zoo into smaller zoo models that can be saved and loaded.

The zoo's special case of `prospr_jax.structured.compaction` (which compacts any model into a
smaller *program*): from a (trained) VGG, SmallConvNet or ResNet with channel-group masks
(`structured_prune`), `compact` builds the same architecture with fewer channels per layer
and its variables: `prospr_jax.structured.slice_variables` (the tracing and slicing that
`structured.compact` does) gives the channel groups, whose kept counts are the convs' widths,
and every leaf (kernels, BatchNorm scale/bias and `mean`/`var`, the `head`) sliced to the
remaining channels. A pruned channel is exactly 0 in the masked network, so in eval mode the
compacted model's logits equal the masked model's up to float rounding.

Compacted models are a `VGG` (`config` with the kept widths, conv biases kept; a SmallConvNet
is the VGG plan `SMALL_CONVNET_PLAN`) or a `ResNet` with `stem_width` / `block_widths`. `save`
writes the architecture as JSON and the variables as Flax msgpack; `load` reads them back.

Not supported (`UnsupportedModelError`): ResNets with zero-padding shortcuts
(`resnet20_prospr`). Their compacted network is no zoo ResNet (the kept channels of a padded
shortcut need not sit where `zero_pad_shortcut` puts them); `prospr_jax.structured.compact`
compacts them into a smaller program instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp

from prospr_jax import structured
from prospr_jax.models.convnet import SmallConvNet
from prospr_jax.models.resnet import BasicBlock, Bottleneck, ResNet
from prospr_jax.models.vgg import VGG
from prospr_jax.tree_types import PyTree


SMALL_CONVNET_PLAN: tuple[int | str, ...] = (16, "M", 32, "M", 64, 64)
"""`SmallConvNet` as a VGG layer plan (same module names, pools and head)."""

SPEC_FILE = "model.json"
VARIABLES_FILE = "variables.msgpack"
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class UnsupportedModelError(ValueError):
  """The model is of a supported class but with a feature zoo compaction does not handle."""


def check_supported(model: nn.Module) -> None:
  """Raises `UnsupportedModelError` for a ResNet with zero-padding (option-A) shortcuts."""
  if isinstance(model, ResNet) and model.shortcut != "projection":
    raise UnsupportedModelError(
        f"Zoo compaction does not support ResNets with {model.shortcut!r} shortcuts (e.g. "
        "resnet20_prospr): a block's surviving padded and input channels need not sit where "
        "zero_pad_shortcut puts them, so the compacted network is no zoo ResNet. "
        "prospr_jax.structured.compact(model, variables, masks, x) compacts it into a smaller "
        "program instead.")


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


def compact_model(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
  """The architecture of `model` with conv output widths from `widths`.

  Args:
    model: a `VGG`, `SmallConvNet` or `ResNet`.
    widths: `{conv kernel path: output channels}` for every conv, e.g.
      `{'conv1/conv/kernel': 40, ...}`.

  Returns:
    A `VGG` for conv chains (a VGG keeps its other attributes, e.g. `conv_bias`), else a
    `ResNet` with `stem_width` and `block_widths` set.

  Raises:
    UnsupportedModelError: see `check_supported`.
  """
  check_supported(model)
  if isinstance(model, ResNet):
    n_convs = 3 if model.block_cls is Bottleneck else 2
    return model.clone(
        stem_width=widths["stem_conv/kernel"],
        block_widths=tuple(
            tuple(widths[f"{name}/conv{i}/kernel"] for i in range(1, n_convs + 1))
            for name in _block_names(model)
        ),
    )
  plan, i = [], 0
  for layer in _plan(model):
    if layer != "M":
      i += 1
      layer = widths[f"conv{i}/conv/kernel"]
    plan.append(layer)
  if isinstance(model, VGG):
    return model.clone(config=tuple(plan))
  return VGG(model.num_classes, config=tuple(plan))


def compact(
    model: nn.Module, variables: PyTree, masks: PyTree, example_input: Any
) -> tuple[nn.Module, PyTree]:
  """The compacted dense model of a channel-masked network, and its variables.

  Args:
    model: a `VGG`, `SmallConvNet` or `ResNet`.
    variables: `{'params': ..., 'batch_stats': ...}` (e.g. after masked training).
    masks: channel-group masks for the params (`structured_prune`); the params are
      multiplied by them first.
    example_input: an input batch (or `jax.ShapeDtypeStruct`) to trace the model on.

  Returns:
    `(small_model, small_variables)` with `small_model.apply(small_variables, x, train=False)`
    equal to `model.apply({'params': apply_masks(params, masks), ...}, x, train=False)`.

  Raises:
    UnsupportedModelError: see `check_supported`.
    ValueError: if the masks are not channel-group masks or a group keeps no channel.
  """
  check_supported(model)
  sliced = structured.slice_variables(model, variables, masks, example_input)
  widths = {m.path: int(sliced.keep[g.name].sum()) for g in sliced.traced.groups
            for m in g.members if m.path.endswith("kernel")}
  return compact_model(model, widths), {"params": sliced.params, **sliced.state}


# --- Saving and loading. -------------------------------------------------------------------


def model_spec(model: nn.Module) -> dict[str, Any]:
  """A JSON-able description of a `VGG`, `SmallConvNet` (as its VGG plan) or `ResNet`.

  Initializers are not stored (they only matter for a fresh `init`). Raises
  `UnsupportedModelError` for the models `check_supported` refuses.
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
  return {"architecture": "vgg", "num_classes": model.num_classes, "config": list(_plan(model)),
          "conv_bias": isinstance(model, VGG) and model.conv_bias}


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
  """The model described by `model_spec`."""
  if spec["architecture"] == "vgg":
    return VGG(spec["num_classes"], config=tuple(spec["config"]),
               conv_bias=spec.get("conv_bias", False))
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
