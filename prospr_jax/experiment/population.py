"""Population training: P sparse networks of one architecture trained by one jitted step.

A pruning-at-initialization study trains hundreds of networks that share the architecture,
optimizer, schedule, batch size and number of steps, and differ in their mask, initial
weights and data order. A `Population` holds P such members stacked along a leading axis
(params, optimizer state with each member's mask in `KeepMaskedState`, BatchNorm statistics,
masks, step counters), and its training split lives on the device (`device_batches`): one call
of the step function trains every member on its own batch, computed inside the step from the
step index.

Formulations (`formulation=`):

* `'vmap'`: `jax.vmap(train_step.train_step)` over the members: one batched program. Best
  where batched matmuls and convolutions are fast (GPU, TPU).
* `'unrolled'`: the members written out one after another inside one jitted function (a
  Python loop over P at trace time): P copies of the single-run program, no batched
  convolutions. Best on CPU, where XLA's convolutions with a batch of weights are slow; compile
  time grows with P.

`default_formulation()` picks `'unrolled'` on CPU and `'vmap'` elsewhere.

Divergence: a member whose training loss at step `s`, or whose params after it, hold a NaN or
inf is marked (`diverged[i]`, `diverged_at[i] = s`) and keeps, from then on, the params,
optimizer state, statistics and step counter it had before that step (its last finite state);
the other members train on, unaffected.

Several devices: `place_population(population, mesh)` shards the member axis over a 1-D
'members' mesh (`members_mesh()`); the step and the evaluation then run each device's members
locally (`jax.shard_map`), with the data replicated (`replicated(mesh)`); the mesh may span
several processes (`population_sweep` reads the results with `distributed.to_host`).

Typical use (`states`: P single-run `TrainState`s built as the training loop builds one, e.g.
with one config's `make_optimizer`/`learning_rate_schedule` and each member's masks and
initial variables):

    train_split = device_batches.put_on_device(in_memory.load_split("fashion_mnist", "train"))
    test_set = device_batches.put_eval_on_device(in_memory.load_split("fashion_mnist", "test"),
                                                 1000)
    batching = device_batches.Batching.for_split(train_split.num_examples, 128)
    population = create_population(states, data_seeds=range(P),
                                   num_train_examples=train_split.num_examples)
    step_fn = make_train_step(batching)
    population, metrics = train_steps(step_fn, population, train_split, range(num_steps))
    results = make_evaluate()(population, test_set)  # {'loss', 'top1', 'top5'}: [P] each
    population.diverged, population.diverged_at      # bool [P], int32 [P] (-1: never)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prospr_jax.experiment.data import device_batches
from prospr_jax.experiment.data.device_batches import (
    Batching, DeviceEvalSet, DeviceSplit, EpochOrder)
from prospr_jax.experiment.train_step import TrainState, eval_step, train_step
from prospr_jax.tree_types import PyTree

MEMBERS_AXIS = "members"
FORMULATIONS = ("vmap", "unrolled")
_EVAL_METRICS = ("loss", "top1", "top5")

StepFn = Callable[["Population", DeviceSplit, jax.Array],
                  tuple["Population", dict[str, jax.Array]]]
EvalFn = Callable[["Population", DeviceEvalSet], dict[str, jax.Array]]


@struct.dataclass
class Population:
  """P training runs stacked along a leading axis.

  Attributes:
    train: a `TrainState` whose every array has a leading axis of size P (`apply_fn` and
      `tx` are shared; each member's mask is in its optimizer state).
    data_keys: uint32 [P, 2], each member's raw key for data order and augmentation.
    orders: each member's example order of its current epoch (epoch [P], order [P, N]).
    diverged: bool [P], True once a member's training loss was NaN or inf.
    diverged_at: int32 [P], the step at which it was (-1: never).
  """

  train: TrainState
  data_keys: jax.Array
  orders: EpochOrder
  diverged: jax.Array
  diverged_at: jax.Array

  @property
  def size(self) -> int:
    """P, the number of members."""
    return self.diverged.shape[0]


def default_formulation(backend: str | None = None) -> str:
  """'unrolled' on CPU (XLA:CPU convolutions with batched weights are slow), else 'vmap'.

  Args:
    backend: a JAX platform name; `None`: `jax.default_backend()`.
  """
  return "unrolled" if (backend or jax.default_backend()) == "cpu" else "vmap"


def _stack_trees(trees: Sequence[PyTree], what: str) -> PyTree:
  """Stacks equally shaped pytrees along a new leading axis.

  Raises:
    ValueError: naming the first leaf whose path, shape or dtype differs from member 0's.
  """
  first, treedef = jax.tree_util.tree_flatten_with_path(trees[0])
  paths = [jax.tree_util.keystr(p) for p, _ in first]
  for index, tree in enumerate(trees[1:], start=1):
    leaves, other_treedef = jax.tree_util.tree_flatten_with_path(tree)
    if other_treedef != treedef:
      only_one = sorted(set(paths) ^ {jax.tree_util.keystr(p) for p, _ in leaves})
      where = f"{what}{only_one[0]} is in one of them only" if only_one else "node types"
      raise ValueError(f"Member {index} cannot be stacked with member 0: their {what} differ in "
                       f"structure ({where}).")
    for path, (_, a), (_, b) in zip(paths, first, leaves):
      if (jnp.shape(a), jnp.result_type(a)) != (jnp.shape(b), jnp.result_type(b)):
        raise ValueError(
            f"Member {index} cannot be stacked with member 0: {what}{path} is "
            f"{jnp.result_type(b)}{list(jnp.shape(b))}, member 0's is "
            f"{jnp.result_type(a)}{list(jnp.shape(a))}. Members must share the architecture.")
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _same_function(a: Callable, b: Callable) -> bool:
  """Whether `a` and `b` compute the same: equal functions, or the same method of equal objects
  (e.g. `apply` of two equal linen modules, which bound-method equality, by identity, misses)."""
  return (getattr(a, "__func__", a) == getattr(b, "__func__", b)
          and getattr(a, "__self__", None) == getattr(b, "__self__", None))


def stack_members(states: Sequence[TrainState]) -> TrainState:
  """One `TrainState` whose arrays stack those of `states` along a new leading axis.

  The states must come from one model and one optimizer configuration (e.g. `make_optimizer`
  with one config and schedule, each with its own masks): only params, optimizer state,
  statistics, masks and step may differ. The result keeps member 0's `apply_fn` and `tx`; the
  masks that `keep_masked` applies are read from each member's optimizer state.

  Raises:
    ValueError: no states; a leaf (named by its path, e.g. `params['head']['kernel']`) differs
      in structure, shape or dtype; or the members have different `apply_fn`s.
  """
  if not states:
    raise ValueError("A population needs at least one member.")
  fields = ("step", "params", "opt_state", "batch_stats", "masks")
  stacked = {f: _stack_trees([getattr(s, f) for s in states], f) for f in fields}
  for index, state in enumerate(states[1:], start=1):
    if not _same_function(state.apply_fn, states[0].apply_fn):
      raise ValueError(f"Member {index} has another apply_fn than member 0; members must share "
                       "the model.")
  return states[0].replace(**stacked)


def member_state(population: Population, index: int) -> TrainState:
  """Member `index`'s `TrainState`, as a single run would hold it (e.g. to save its params)."""
  return jax.tree.map(lambda x: x[index], population.train)


def create_population(states: Sequence[TrainState], data_seeds: Iterable[int],
                      num_train_examples: int) -> Population:
  """A population of the members `states` (see `stack_members`), none diverged.

  Args:
    states: P single-run train states at step 0 (masked initial params, each member's
      optimizer made with its own masks).
    data_seeds: P ints; member i's data order and augmentation come from
      `device_batches.run_key(data_seeds[i])`, as a single run seeded so.
    num_train_examples: N, the size of the training split the population trains on.

  Raises:
    ValueError: as `stack_members`, or not one data seed per member.
  """
  data_seeds = list(data_seeds)
  if len(data_seeds) != len(states):
    raise ValueError(f"{len(states)} members but {len(data_seeds)} data seeds.")
  size = len(states)
  return Population(
      train=stack_members(states),
      data_keys=jnp.stack([device_batches.run_key(seed) for seed in data_seeds]),
      orders=device_batches.initial_order(num_train_examples, size),
      diverged=jnp.zeros(size, bool),
      diverged_at=jnp.full(size, -1, jnp.int32),
  )


def members_mesh() -> Mesh:
  """A 1-D mesh, axis 'members', over all devices (`Auto` axis, as `distributed.data_mesh`)."""
  return jax.make_mesh((jax.device_count(),), (MEMBERS_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def _check_divisible(size: int, mesh: Mesh) -> None:
  if size % mesh.size:
    raise ValueError(f"A population of {size} members cannot be sharded over {mesh.size} "
                     f"devices: the number of members must be divisible by the device count.")


def place_population(population: Population, mesh: Mesh) -> Population:
  """`population` with its member axis sharded over `mesh` (P / devices members each).

  Raises:
    ValueError: P is not divisible by the number of devices of `mesh`.
  """
  _check_divisible(population.size, mesh)
  # An identity program rather than `jax.device_put`: it also reshards a population replicated
  # over the devices of several processes.
  sharding = NamedSharding(mesh, PartitionSpec(MEMBERS_AXIS))
  return jax.jit(lambda p: p, out_shardings=sharding)(population)


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that copies an array to every device of `mesh` (for the data splits:
  `device_batches.put_on_device(split, replicated(mesh))`)."""
  return NamedSharding(mesh, PartitionSpec())


def map_members(fn: Callable[..., PyTree], formulation: str, *stacked: PyTree) -> PyTree:
  """`fn` applied to each member's slice of the `stacked` pytrees, results stacked.

  Args:
    fn: takes one member's slice of each of `stacked` and returns a pytree.
    formulation: 'vmap' (`jax.vmap(fn)`) or 'unrolled' (one call of `fn` per member, traced
      one after another).
    *stacked: pytrees whose leaves have the member axis first.
  """
  if formulation == "vmap":
    return jax.vmap(fn)(*stacked)
  if formulation != "unrolled":
    raise ValueError(f"Unknown formulation {formulation!r}; choose one of {FORMULATIONS}.")
  size = jax.tree.leaves(stacked)[0].shape[0]
  outputs = [fn(*jax.tree.map(lambda x, i=i: x[i], stacked)) for i in range(size)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)


def _finite_per_member(stacked: PyTree) -> jax.Array:
  """bool [P]: whether every value of member i's slice of `stacked` is finite."""
  return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
                    for x in jax.tree.leaves(stacked)]).all(axis=0)


def _freeze_where(diverged: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  """`old` for the members marked in `diverged` (bool [P]), `new` for the others."""
  return jax.tree.map(
      lambda n, o: jnp.where(diverged.reshape(-1, *(1,) * (n.ndim - 1)), o, n), new, old)


def _population_step(population: Population, split: DeviceSplit, step: jax.Array, *,
                     batching: Batching, formulation: str
                     ) -> tuple[Population, dict[str, jax.Array]]:
  """One `train_step` of every member on its batch of step `step` (see `make_train_step`)."""
  orders = device_batches.advance_order(population.orders, population.data_keys, step,
                                        batching.steps_per_epoch)

  def member_step(state, key, order):
    return train_step(state, device_batches.train_batch(split, batching, key, order, step))

  trained, metrics = map_members(member_step, formulation, population.train,
                                 population.data_keys, orders.order)
  finite = jnp.isfinite(metrics["loss"]) & _finite_per_member(trained.params)
  diverged = population.diverged | ~finite
  newly = diverged & ~population.diverged
  return population.replace(
      train=_freeze_where(diverged, trained, population.train),
      orders=orders,
      diverged=diverged,
      diverged_at=jnp.where(newly, jnp.asarray(step, jnp.int32), population.diverged_at),
  ), metrics


def _evaluate_sums(population: Population, eval_set: DeviceEvalSet, *, formulation: str
                   ) -> dict[str, jax.Array]:
  """Every member's summed test metrics over `eval_set` (see `make_evaluate_sums`)."""

  def add_batch(sums, index):
    batch = device_batches.eval_batch(eval_set, index)
    out = map_members(lambda state: eval_step(state, batch), formulation, population.train)
    return jax.tree.map(jnp.add, sums, out), None

  zeros = {k: jnp.zeros(population.size, jnp.float32) for k in ("count", *_EVAL_METRICS)}
  sums, _ = jax.lax.scan(add_batch, zeros, jnp.arange(eval_set.num_batches))
  return sums


def _evaluate(population: Population, eval_set: DeviceEvalSet, *, formulation: str
              ) -> dict[str, jax.Array]:
  """Every member's mean test metrics over `eval_set` (see `make_evaluate`)."""
  sums = _evaluate_sums(population, eval_set, formulation=formulation)
  return {k: sums[k] / sums["count"] for k in _EVAL_METRICS}


def _over_members(fn: Callable, mesh: Mesh | None, num_replicated: int,
                  num_outputs: int) -> Callable:
  """`fn(population, *replicated_args)` run per device on its members when `mesh` is given."""
  if mesh is None:
    return fn
  sharded = PartitionSpec(MEMBERS_AXIS)
  # Members never communicate (no collectives), so the replication checks are not needed; they
  # would reject `advance_order`'s cond, whose branches differ only in that typing.
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=(sharded, *(PartitionSpec(),) * num_replicated),
                         out_specs=(sharded,) * num_outputs if num_outputs > 1 else sharded,
                         check_vma=False)

  def checked(population: Population, *args):
    _check_divisible(population.size, mesh)
    return mapped(population, *args)

  return checked


def _resolve(formulation: str | None) -> str:
  formulation = formulation or default_formulation()
  if formulation not in FORMULATIONS:
    raise ValueError(f"Unknown formulation {formulation!r}; choose one of {FORMULATIONS}.")
  return formulation


@functools.cache
def make_train_step(batching: Batching, formulation: str | None = None,
                    mesh: Mesh | None = None) -> StepFn:
  """The jitted population step `step_fn(population, split, step) -> (population, metrics)`.

  `step` (int scalar, 0-based) selects every member's batch: member i trains on
  `device_batches.train_batch(split, batching, data_keys[i], <its epoch order>, step)`, exactly
  the batch a single run with that key gets at that step. `metrics` are
  `{'loss', 'accuracy'}`, float32 [P], of the batch before the update. Members whose loss or
  updated params are not finite are frozen and marked (module docstring). The input
  population's buffers are donated (invalid after the call). Cached: equal arguments give the
  same function, compiled once per population shape.

  Args:
    batching: batch size, steps per epoch and augmentation, shared by all members.
    formulation: 'vmap' or 'unrolled' (module docstring); `None`: `default_formulation()`.
    mesh: a 'members' mesh (`members_mesh()`) the population is placed on
      (`place_population`), with `split` replicated; `None`: one device.

  Raises:
    ValueError: unknown formulation; at the first call, P not divisible by the mesh's devices.
  """
  fn = functools.partial(_population_step, batching=batching,
                         formulation=_resolve(formulation))
  return jax.jit(_over_members(fn, mesh, num_replicated=2, num_outputs=2), donate_argnums=0)


@functools.cache
def make_evaluate(formulation: str | None = None, mesh: Mesh | None = None) -> EvalFn:
  """The jitted `evaluate(population, eval_set) -> {'loss', 'top1', 'top5'}`, float32 [P] each:
  every member's mean test loss and top-1/top-5 accuracy (fractions) over the real examples of
  `eval_set`, in one program (BatchNorm in eval mode). Arguments as `make_train_step`."""
  fn = functools.partial(_evaluate, formulation=_resolve(formulation))
  return jax.jit(_over_members(fn, mesh, num_replicated=1, num_outputs=1))


@functools.cache
def make_evaluate_sums(formulation: str | None = None, mesh: Mesh | None = None) -> EvalFn:
  """The jitted `evaluate_sums(population, eval_set) -> {'count', 'loss', 'top1', 'top5'}`,
  float32 [P] each: every member's number of real test examples and its sums of loss, top-1
  and top-5 hits over them (`train_step.eval_step` summed batch by batch, as a single run
  sums them, so dividing on the host gives a single run's means). Arguments as
  `make_train_step`."""
  fn = functools.partial(_evaluate_sums, formulation=_resolve(formulation))
  return jax.jit(_over_members(fn, mesh, num_replicated=1, num_outputs=1))


def train_steps(step_fn: StepFn, population: Population, split: DeviceSplit,
                steps: Iterable[int]) -> tuple[Population, dict[str, jax.Array]]:
  """Runs `step_fn` for each step index in `steps` (e.g. `range(first, last)`), dispatching
  without waiting for results. Returns the population and the metrics of every step,
  `{'loss', 'accuracy'}`: float32 [num_steps, P]."""
  history = []
  for step in steps:
    population, metrics = step_fn(population, split, jnp.asarray(step, jnp.int32))
    history.append(metrics)
  return population, jax.tree.map(lambda *xs: jnp.stack(xs), *history)
