"""`config.prune` of the experiments: the `prune` options it gives, and which fields a method reads.

`config.prune` holds the options of every method side by side (see `configs/default.py`); a run
reads only the fields of its method. `check_overrides` refuses a command-line override of a
field that the chosen method would ignore, so that `--config.prune.method=snip
--config.prune.num_steps=5` fails instead of silently training plain SNIP. Which fields a
method reads, and how they become its options, is declared with the method
(`prospr_jax.saliency.registry.MethodSpec`); this module only reads the declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from prospr_jax import masks as masks_lib
from prospr_jax.adapters import check_batchnorm_mode
from prospr_jax.analysis import sanity
from prospr_jax.experiment import config_checks
from prospr_jax.saliency import registry
from prospr_jax.adapters import BatchNormMode

DENSE = "dense"
"""`config.prune.method` value that trains the unpruned network."""

_EVERY_METHOD = (
    "method", "sparsity", "structured", "allocation", "min_kept_per_layer", "sanity_check"
)


def method_spec(pc: ml_collections.ConfigDict) -> registry.MethodSpec:
  """The declaration of the pruning method `pc.method` (not 'dense')."""
  if pc.method not in registry.METHODS:
    raise ValueError(
        f"Unknown pruning method {pc.method!r}; choose {DENSE!r} or one of "
        f"{sorted(registry.METHODS)}."
    )
  return registry.METHODS[pc.method]


def fields_read(pc: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields of `config.prune` that pruning with `pc.method` reads (`('method',)` for dense).

  Every method reads `_EVERY_METHOD` (and `exclude` when unstructured); one that needs batches
  reads `batch_size`, one that runs the model `batchnorm_mode`; then the fields its declaration
  maps to its options, batch count and loss options (`MethodSpec.config_fields`).
  """
  if pc.method == DENSE:
    return ("method",)
  spec = method_spec(pc)
  exclude = () if pc.structured else ("exclude",)
  batch_size = ("batch_size",) if "batches" in spec.needs else ()
  batchnorm = ("batchnorm_mode",) if spec.batchnorm_mode is not None else ()
  return _EVERY_METHOD + exclude + batch_size + batchnorm + spec.config_fields()


def known_fields() -> set[str]:
  """Every `config.prune` field some registered method reads (the valid field names)."""
  per_method = (f for spec in registry.METHODS.values()
                for f in (spec.num_batches.fields + spec.config_fields()))
  return {*_EVERY_METHOD, "exclude", "batch_size", "batchnorm_mode", *per_method}


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


def _read(sources: Mapping[str, registry.FromConfig | None],
          pc: ml_collections.ConfigDict) -> dict[str, Any]:
  """`{name: its value read from pc}`, leaving out names with no source or no value set."""
  values = {name: source.value(pc) for name, source in sources.items() if source is not None}
  return {name: value for name, value in values.items() if value is not None}


def method_options(pc: ml_collections.ConfigDict) -> dict[str, Any]:
  """The method-specific keyword arguments of `prune` read from `config.prune`."""
  return _read(method_spec(pc).options, pc)


def loss_options(pc: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keyword arguments of the scoring loss (`LinenLoss`) that `pc.method` reads, e.g. a
  logit temperature."""
  return _read(method_spec(pc).loss_options, pc)


def num_pruning_batches(pc: ml_collections.ConfigDict) -> int:
  """How many batches of `pc.batch_size` a data-dependent method scores on."""
  return method_spec(pc).num_batches.value(pc)


def scoring_batchnorm_mode(pc: ml_collections.ConfigDict) -> BatchNormMode | None:
  """How BatchNorm runs while `pc.method` scores: `pc.batchnorm_mode` ('train' or 'eval'), or
  where that is None the mode of the method's authors' code (`METHODS[method].batchnorm_mode`:
  None for the methods that run no model)."""
  if pc.batchnorm_mode is not None:
    check_batchnorm_mode(pc.batchnorm_mode)
    return pc.batchnorm_mode
  return method_spec(pc).batchnorm_mode


@dataclasses.dataclass(frozen=True)
class PrunePlan:
  """`config.prune`, checked, and what pruning at initialization derives from it (`plan`).

  Attributes:
    method: a registered method's name, or `DENSE`.
    sparsity: fraction of the prunable weights (structured: of the channels) removed.
    structured: channel-group masks (`prospr_jax.structured`) instead of per-weight masks.
    allocation: how the kept weights are spread over the layers ('global', 'uniform', 'erk').
    min_kept_per_layer: least weights (structured: channels) kept per layer (group), or None.
    filter_fn: the prunable params leaves: kernels whose path matches no `exclude` regex.
    sanity_check: None, 'shuffle', 'reinit' or 'invert' (`prospr_jax.analysis.sanity`).
    needs: the inputs the method needs (`MethodSpec.needs`; () for dense).
    batchnorm_mode: how BatchNorm runs while scoring (`scoring_batchnorm_mode`).
    options: the method's keyword options (`method_options`).
    loss_options: keyword arguments of the scoring loss (`loss_options`).
    batch_size: global size of a pruning batch.
    num_batches: how many pruning batches the method scores on (0: it takes none).
  """

  method: str
  sparsity: float
  structured: bool
  allocation: str
  min_kept_per_layer: int | None
  filter_fn: masks_lib.FilterFn
  sanity_check: str | None
  needs: tuple[str, ...]
  batchnorm_mode: BatchNormMode | None
  options: Mapping[str, Any]
  loss_options: Mapping[str, Any]
  batch_size: int
  num_batches: int


def plan(pc: ml_collections.ConfigDict) -> PrunePlan:
  """Checks `config.prune` and derives the `PrunePlan` of a run.

  Raises:
    ValueError: an unknown field; unknown method, allocation, sanity check or BatchNorm mode;
      sparsity outside [0, 1); a bad `exclude` regex; a pruning batch size or count below 1
      (methods that take batches); a sanity check with structured pruning.
    TypeError: a non-numeric sparsity, a non-integer count.
  """
  config_checks.check_known_fields("prune", pc, known_fields())
  masks_lib.check_sparsity(pc.sparsity)
  fields_read(pc)  # an unknown method
  config_checks.check_choice("prune.allocation", pc.allocation, masks_lib.ALLOCATIONS)
  if pc.min_kept_per_layer is not None:
    config_checks.check_int("prune.min_kept_per_layer", pc.min_kept_per_layer, 0)
  config_checks.check_regexes("prune.exclude", pc.exclude)
  sanity.check_sanity_check(pc.sanity_check)
  if pc.structured and pc.method != DENSE and pc.sanity_check is not None:
    raise ValueError("Sanity checks are for unstructured masks; set prune.sanity_check=None "
                     "with prune.structured=True.")
  dense = pc.method == DENSE
  needs = () if dense else method_spec(pc).needs
  num_batches = 0
  if "batches" in needs:
    num_batches = num_pruning_batches(pc)
    config_checks.check_int("prune.batch_size", pc.batch_size, 1)
    config_checks.check_int(
        f"prune.{', '.join(method_spec(pc).num_batches.fields)}", num_batches, 1)
  return PrunePlan(
      method=pc.method, sparsity=pc.sparsity, structured=pc.structured,
      allocation=pc.allocation, min_kept_per_layer=pc.min_kept_per_layer,
      filter_fn=masks_lib.kernel_filter(exclude=tuple(pc.exclude)),
      sanity_check=pc.sanity_check, needs=needs,
      batchnorm_mode=None if dense else scoring_batchnorm_mode(pc),
      options={} if dense else method_options(pc),
      loss_options={} if dense else loss_options(pc),
      batch_size=pc.batch_size,
      num_batches=num_batches,
  )
