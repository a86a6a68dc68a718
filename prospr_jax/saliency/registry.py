"""The table of pruning methods, each declared once as a `MethodSpec`, and `prune`, the one
entry point that returns masks.

A `MethodSpec` says everything about a method that code outside its implementation needs: its
function, the inputs it needs, its options, whether it is one-shot, the BatchNorm mode it
scores in, its channel-group (structured) scorer, where the experiments read its options from
(`config.prune` field names, as plain strings) and its place in sweeps and reports. The
built-in methods are declared in `prospr_jax.builtin_methods`; `registered(spec)` adds one for
the length of a `with` block (tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from prospr_jax import masks as masks_lib
from prospr_jax.analysis import sanity
from prospr_jax.adapters import BATCHNORM_MODES, BatchNormMode
from prospr_jax.tree_types import PyTree


@dataclasses.dataclass(frozen=True)
class PruneInputs:
  """What a pruning method may read. Which fields a method needs is in `METHODS[name].needs`."""

  params: PyTree
  loss_fn: Callable[..., Any] | None = None
  batches: PyTree | Sequence[PyTree] | None = None
  state: PyTree | None = None
  apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None
  input_shape: Sequence[int] | None = None
  key: jax.Array | None = None
  filter_fn: masks_lib.FilterFn = masks_lib.default_filter


MethodFn = Callable[..., PyTree]
"""`fn(inputs: PruneInputs, sparsity, select, **options) -> bool masks`; `select(scores,
sparsity)` turns one score pytree into masks (allocation, minimum per layer, sanity checks)."""


@dataclasses.dataclass(frozen=True)
class FromConfig:
  """Where the experiments read a value from: `build(*[config.prune.<f> for f in fields])`.

  When every one of the fields is None the value is left out (the method's default applies).
  """

  fields: tuple[str, ...]
  build: Callable[..., Any] | None = None

  def value(self, section: Any) -> Any:
    """The value read from `section` (an object with the fields as attributes), or None when
    every field is None."""
    values = [getattr(section, f) for f in self.fields]
    if all(v is None for v in values):
      return None
    return self.build(*values) if self.build else values[0]


def from_config(*fields: str, build: Callable[..., Any] | None = None) -> FromConfig:
  """`FromConfig(fields, build)`: `from_config('num_rounds')` reads one field as it is."""
  if not fields or (build is None and len(fields) > 1):
    raise ValueError("from_config takes one field, or several with a build function.")
  return FromConfig(fields, build)


@dataclasses.dataclass(frozen=True)
class ChannelScorer:
  """A method's channel-group (structured) form: `fn(inputs: structured.scoring.ScoreInputs,
  **options) -> {group name: float64 (size,) scores}`, reading the `ScoreInputs` fields in
  `needs`; it takes the same options as the method."""

  fn: Callable[..., dict[str, Any]]
  needs: tuple[str, ...] = ()


_PRUNE_INPUTS = tuple(f.name for f in dataclasses.fields(PruneInputs))


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """Everything about one pruning method outside its implementation.

  Attributes:
    name: what `prune(method=...)` and `config.prune.method` call it.
    fn: the method (`MethodFn`).
    needs: the `PruneInputs` fields it needs besides `params` (e.g. `('loss_fn', 'batches')`).
    options: its keyword options, each mapped to the `config.prune` field(s) the experiments
      read it from (None: not set from the config).
    one_shot: whether it selects once from one score pytree (the `invert` sanity check needs
      that) rather than iterating.
    batchnorm_mode: the BatchNorm mode its authors' code scores in (None: it runs no model).
    num_batches: how many batches it scores on in the experiments (methods needing batches).
    loss_options: keyword arguments of the experiments' scoring loss
      (`prospr_jax.adapters.LinenLoss`), e.g. a logit temperature, from the config.
    channel_scorer: its channel-group form (None: no structured form).
    in_default_sweep: whether a sweep without an explicit method list runs it.
    report_reference: whether the study report compares every other method against it (one
      method at most).
  """

  name: str
  fn: MethodFn
  needs: tuple[str, ...] = ()
  options: Mapping[str, FromConfig | None] = dataclasses.field(default_factory=dict)
  one_shot: bool = False
  batchnorm_mode: BatchNormMode | None = None
  num_batches: FromConfig = from_config("num_batches")
  loss_options: Mapping[str, FromConfig] = dataclasses.field(default_factory=dict)
  channel_scorer: ChannelScorer | None = None
  in_default_sweep: bool = True
  report_reference: bool = False

  def __post_init__(self):
    unknown = sorted(set(self.needs) - set(_PRUNE_INPUTS))
    if unknown:
      raise ValueError(f"Method {self.name!r} needs {unknown}, which are not PruneInputs "
                       f"fields {list(_PRUNE_INPUTS)}.")
    if self.batchnorm_mode not in (None, *BATCHNORM_MODES):
      raise ValueError(f"Method {self.name!r}: batchnorm_mode must be None or one of "
                       f"{BATCHNORM_MODES}, not {self.batchnorm_mode!r}.")

  def config_fields(self) -> tuple[str, ...]:
    """The `config.prune` fields its options, batch count and loss options are read from (in
    that order, each once)."""
    sources = [*self.options.values(), *self.loss_options.values()]
    if "batches" in self.needs:
      sources.insert(0, self.num_batches)
    return tuple(dict.fromkeys(f for s in sources if s is not None for f in s.fields))


METHODS: dict[str, MethodSpec] = {}
"""The registered methods by name, in declaration order (the order of sweeps and reports)."""


def register(spec: MethodSpec) -> MethodSpec:
  """Adds `spec` to `METHODS`; a name already taken or a second report reference is an error."""
  if spec.name in METHODS:
    raise ValueError(f"A pruning method named {spec.name!r} is already registered.")
  if spec.report_reference and report_reference() is not None:
    raise ValueError(f"{spec.name!r} cannot be the report reference: {report_reference()!r} is.")
  METHODS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes the method `name` from `METHODS`."""
  get(name)
  del METHODS[name]


@contextlib.contextmanager
def registered(*specs: MethodSpec) -> Iterator[tuple[MethodSpec, ...]]:
  """Registers `specs` for the length of a `with` block, then removes them."""
  done = []
  try:
    for spec in specs:
      done.append(register(spec))
    yield specs
  finally:
    for spec in done:
      unregister(spec.name)


def get(name: str) -> MethodSpec:
  """The method registered as `name`; ValueError naming the registered ones otherwise."""
  if name not in METHODS:
    raise ValueError(f"Unknown pruning method {name!r}; choose one of {sorted(METHODS)}.")
  return METHODS[name]


def default_sweep_methods() -> tuple[str, ...]:
  """The methods a sweep runs by default, in declaration order."""
  return tuple(name for name, spec in METHODS.items() if spec.in_default_sweep)


def report_reference() -> str | None:
  """The method the study report compares the others against, or None if none is declared."""
  return next((name for name, spec in METHODS.items() if spec.report_reference), None)


def structured_methods() -> tuple[str, ...]:
  """The methods with a channel-group (structured) form, in declaration order."""
  return tuple(name for name, spec in METHODS.items() if spec.channel_scorer is not None)


def check_options(method: str, given: Iterable[str], accepted: Iterable[str]) -> None:
  """Raises ValueError naming the accepted options if `given` holds a name not in `accepted`."""
  accepted = sorted(accepted)
  unknown = sorted(set(given) - set(accepted))
  if unknown:
    takes = f"its options are {accepted}" if accepted else "it takes no options"
    raise ValueError(f"Method {method!r} has no option(s) {unknown}: {takes}.")


def check_key(key: Any) -> None:
  """Raises TypeError unless `key` is a JAX PRNG key: a typed key (`jax.random.key(seed)`) or
  a raw uint32 [2] one (`jax.random.PRNGKey(seed)`)."""
  if isinstance(key, jax.Array | np.ndarray):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      return
    if key.dtype == np.uint32 and key.shape == (2,):
      return
    got = f"an array of dtype {key.dtype} and shape {key.shape}"
  else:
    got = f"{key!r} ({type(key).__name__})"
  raise TypeError(f"key must be a JAX PRNG key, made with jax.random.key(seed) (or the raw "
                  f"jax.random.PRNGKey(seed)); got {got}.")


def check_input_types(inputs: PruneInputs, options: Mapping[str, Any]) -> None:
  """Raises TypeError naming the argument of `prune` of the wrong kind: a function argument
  (`loss_fn`, `apply_fn`, `filter_fn`) that is not callable, a key that is not a PRNG key
  (`check_key`), an `optimizer` option that is not an optax transformation."""
  for name in ("loss_fn", "apply_fn", "filter_fn"):
    value = getattr(inputs, name)
    if value is not None and not callable(value):
      raise TypeError(f"{name} must be a function; got {value!r} ({type(value).__name__}).")
  if inputs.key is not None:
    check_key(inputs.key)
  optimizer = options.get("optimizer")
  if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"optimizer must be an optax transformation such as optax.sgd(0.1); got "
                    f"{optimizer!r} ({type(optimizer).__name__}).")


def prune(
    method: str,
    params: PyTree,
    sparsity: float,
    *,
    loss_fn: Callable[..., Any] | None = None,
    batches: PyTree | Sequence[PyTree] | None = None,
    state: PyTree | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    input_shape: Sequence[int] | None = None,
    key: jax.Array | None = None,
    filter_fn: masks_lib.FilterFn = masks_lib.default_filter,
    allocation: masks_lib.Allocation = "global",
    min_kept_per_layer: int | None = None,
    invert: bool = False,
    **options: Any,
) -> PyTree:
  """Prunes `params` at initialization with the method registered as `method`.

  Args:
    method: a name in `METHODS`.
    params: the initial params.
    sparsity: fraction of prunable weights removed, in [0, 1).
    loss_fn: `loss_fn(params, batch) -> loss`, or with `state`,
      `loss_fn(params, state, batch) -> (loss, new_state)` (data-dependent methods).
    batches: a batch or a list of batches for data-dependent methods.
    state: model state such as BatchNorm statistics; never modified.
    apply_fn: `apply_fn(params, x) -> outputs` in eval mode (SynFlow).
    input_shape: one example's input shape (SynFlow).
    key: PRNG key (random scores).
    filter_fn: `filter_fn(path, leaf) -> bool` choosing prunable leaves.
    allocation, min_kept_per_layer: see `masks_from_scores`.
    invert: the `invert` sanity check (Frankle et al. 2021): every prunable layer keeps its
      lowest-scored weights, as many as the method would keep there (one-shot methods only;
      see `prospr_jax.analysis.sanity.invert_selection`).
    **options: the method's options (`METHODS[method].options`), e.g. ProsPr's `num_steps`,
      `optimizer`, `remat`.

  Returns:
    A bool mask pytree with the structure of `params`.

  Raises:
    ValueError: unknown method or option, missing inputs, sparsity outside [0, 1).
    TypeError: non-numeric sparsity, params that are not floating point, `structured=`, an
      argument of the wrong kind (`check_input_types`: e.g. an int key, a string optimizer).
  """
  spec = get(method)
  if "structured" in options:
    raise TypeError(
        "prune() has no structured mode: channel pruning, with the channels that must go "
        "together traced from the model, is prospr_jax.structured_prune(method, model, "
        "variables, batches, sparsity)."
    )
  check_options(method, options, spec.options)
  masks_lib.check_float_params(params)
  inputs = PruneInputs(params, loss_fn, batches, state, apply_fn, input_shape, key, filter_fn)
  check_input_types(inputs, options)
  missing = [name for name in spec.needs if getattr(inputs, name) is None]
  if missing:
    raise ValueError(f"Method {method!r} needs {missing}; pass them to prune().")
  if invert and not spec.one_shot:
    one_shot = sorted(n for n, m in METHODS.items() if m.one_shot)
    raise ValueError(
        f"invert=True needs a one-shot method (it inverts one score ranking); {method!r} "
        f"iterates. Use one of {one_shot}."
    )
  masks_lib.check_sparsity(sparsity)  # before any expensive scoring
  select = functools.partial(
      masks_lib.masks_from_scores, filter_fn=filter_fn, allocation=allocation,
      min_kept_per_layer=min_kept_per_layer,
  )
  if invert:
    chosen = select
    select = lambda scores, s: sanity.invert_selection(scores, chosen(scores, s), filter_fn)
  return spec.fn(inputs, sparsity, select, **options)
