"""`config.prune` of the experiments: the `prune` options it gives, and which fields a method reads.

`config.prune` holds the options of every method side by side (see `configs/default.py`); a run
reads only the fields of its method. `check_overrides` refuses a command-line override of a
field that the chosen method would ignore, so that `--config.prune.method=snip
--config.prune.num_steps=5` fails instead of silently training plain SNIP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ml_collections
import optax

from prospr_jax.adapters import check_batchnorm_mode
from prospr_jax.saliency import registry
from prospr_jax.saliency.objective import BatchNormMode

DENSE = "dense"
"""`config.prune.method` value that trains the unpruned network."""

_EVERY_METHOD = (
    "method", "sparsity", "structured", "allocation", "min_kept_per_layer", "sanity_check"
)
_PROSPR = ("batch_size", "batchnorm_mode", "num_steps", "inner_lr", "inner_momentum", "remat")
_GRADUAL = ("batch_size", "batchnorm_mode", "num_batches", "num_rounds")
# The fields each method reads besides `_EVERY_METHOD` (and `exclude` when unstructured).
_METHOD_FIELDS = {
    "prospr": _PROSPR,
    "prospr_first_order": _PROSPR,
    "snip": ("batch_size", "batchnorm_mode", "num_batches"),
    "grasp": ("batch_size", "batchnorm_mode", "num_batches", "grasp_temperature"),
    "iterative_snip": _GRADUAL,
    "force": _GRADUAL,
    "synflow": ("batchnorm_mode", "synflow_rounds", "synflow_float64"),
    "magnitude": (),
    "random": (),
}


def fields_read(pc: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields of `config.prune` that pruning with `pc.method` reads (`('method',)` for dense)."""
  if pc.method == DENSE:
    return ("method",)
  if pc.method not in _METHOD_FIELDS:
    raise ValueError(
        f"Unknown pruning method {pc.method!r}; choose {DENSE!r} or one of "
        f"{sorted(_METHOD_FIELDS)}."
    )
  exclude = () if pc.structured else ("exclude",)
  return _EVERY_METHOD + exclude + _METHOD_FIELDS[pc.method]


def check_overrides(pc: ml_collections.ConfigDict, overridden: Iterable[str]) -> None:
  """Raises ValueError if a field named in `overridden` (set on the command line) is unused.

  Args:
    pc: `config.prune` after the overrides.
    overridden: names of the `config.prune` fields that the command line set.
  """
  read = fields_read(pc)
  unused = sorted(set(overridden) - set(read))
  if unused:
    kind = "structured " if pc.structured and pc.method != DENSE else ""
    raise ValueError(
        f"{', '.join('--config.prune.' + f for f in unused)} would be ignored: {kind}method "
        f"{pc.method!r} reads only config.prune.{{{', '.join(read)}}}."
    )


def method_options(pc: ml_collections.ConfigDict) -> dict[str, Any]:
  """The method-specific keyword arguments of `prune` read from `config.prune`."""
  method = pc.method
  if method in ("prospr", "prospr_first_order"):
    momentum = pc.inner_momentum or None
    return {"num_steps": pc.num_steps, "remat": pc.remat,
            "optimizer": optax.sgd(pc.inner_lr, momentum=momentum)}
  if method in ("iterative_snip", "force"):
    return {} if pc.num_rounds is None else {"num_rounds": pc.num_rounds}
  if method == "synflow":
    return {"num_rounds": pc.synflow_rounds, "float64": pc.synflow_float64}
  return {}


def num_pruning_batches(pc: ml_collections.ConfigDict) -> int:
  """How many batches of `pc.batch_size` a data-dependent method scores on."""
  if pc.method in ("prospr", "prospr_first_order"):
    return pc.num_steps + 1
  return pc.num_batches


def scoring_batchnorm_mode(pc: ml_collections.ConfigDict) -> BatchNormMode | None:
  """How BatchNorm runs while `pc.method` scores: `pc.batchnorm_mode` ('train' or 'eval'), or
  where that is None the mode of the method's authors' code (`METHODS[method].batchnorm_mode`:
  None for the methods that run no model)."""
  if pc.batchnorm_mode is not None:
    check_batchnorm_mode(pc.batchnorm_mode)
    return pc.batchnorm_mode
  return registry.METHODS[pc.method].batchnorm_mode
