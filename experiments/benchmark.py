r"""Cost of ProsPr relative to training, measured side by side in one process.

  python experiments/benchmark.py                      # small_convnet, batch 128, CPU/GPU/TPU
  python experiments/benchmark.py --preset=cifar10_resnet20 --remat  # a paper setting, remat
  python experiments/benchmark.py --smoke              # tiny and fast (used by the tests)
  python experiments/benchmark.py --preset=cifar10_resnet20 \
      --preset=fashion_mnist_small_convnet --reference=reference.jsonl   # several settings,
      # side by side with scripts/reference_benchmark.py's times (scripts/cpu_benchmark.sh)

Every measured function is jitted, lowered and compiled once (`jit(f).lower(...).compile()`,
timed as the compile time), run once as a warm-up, then run `--repeats` times, the functions
taking turns so that background load affects them alike; the run time is the median wall time
of one call with `jax.block_until_ready`. Inputs are synthetic random
batches (timing and memory do not depend on the data). Reported, as ratios plus absolute ms:

  * full ProsPr saliency (k inner steps; with --remat, `remat=True`) / one jitted masked
    training step;
  * first-order ProsPr / full ProsPr and SNIP / full ProsPr at the reference k (3, or the
    largest k <= 3 in --ks);
  * the masked training step (`train_step.make_optimizer`: keep_masked -> weight decay -> SGD
    with momentum) / the same chain without keep_masked (dense);
  * with --reference (the JSON lines of scripts/reference_benchmark.py), side by side with the
    authors' PyTorch ProsPr on the same setting (its jobs with this model name, batch size,
    input shape and number of classes): the training step, full and first-order ProsPr as
    prospr_jax / reference wall-time ratios, and full ProsPr / training step on both sides;
  * the compiled memory of the ProsPr meta-gradient with and without remat for each k in
    --memory_ks (none: skipped), as ratios to the smallest k, from
    `Compiled.memory_analysis()`: peak = argument + output + temp - alias bytes (the k + 1
    distinct input batches are arguments, so they are included); every timed function's own
    peak is reported beside its times.

Each --preset (repeatable) is measured in turn in the same process; --output then holds
`{"runs": [one run_benchmark result per setting]}`.

Imports no TensorFlow, tfds or ml-collections: it runs where just jax, flax, optax and absl are.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from prospr_jax import masks as masks_lib
from prospr_jax import models
from prospr_jax.experiment import provenance, train_step
from prospr_jax.adapters import LinenLoss
from prospr_jax.saliency import prospr_scores, snip_scores
from prospr_jax.tree_types import PyTree


PRESETS: dict[str, dict[str, Any]] = {
    "cifar10_resnet20": {"model_name": "resnet20_prospr", "input_shape": (32, 32, 3),
                         "num_classes": 10},
    "cifar10_vgg16": {"model_name": "vgg16_prospr", "input_shape": (32, 32, 3), "num_classes": 10},
    "tinyimagenet_resnet18": {"model_name": "resnet18_prospr", "input_shape": (64, 64, 3),
                              "num_classes": 200},
    "fashion_mnist_small_convnet": {"model_name": "small_convnet", "input_shape": (28, 28, 1),
                                    "num_classes": 10},
}
"""The paper's settings (named like their configs/, on the authors' networks) and the project's
default CPU setting: `run_benchmark` keyword arguments."""

_PRESET = flags.DEFINE_multi_enum(
    "preset", [], list(PRESETS),
    "A setting: sets --model, --input_shape, --num_classes. Repeat it to measure several.")
_MODEL = flags.DEFINE_string("model", "small_convnet", "A name for prospr_jax.models.get_model.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size of every measured function.")
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["28", "28", "1"], "Input shape H,W,C.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Number of classes.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per function (median reported).")
_KS = flags.DEFINE_list("ks", ["1", "3", "10"], "ProsPr inner steps k to time.")
_MEMORY_KS = flags.DEFINE_list(
    "memory_ks", ["1", "3", "10", "30"], "k for the memory table (empty: no table)."
)
_REMAT = flags.DEFINE_bool("remat", False, "Time full ProsPr with remat=True.")
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "Tiny run: lenet300100, batch 8, 1 repetition, ks 1, memory_ks 1,3."
)
_OUTPUT = flags.DEFINE_string("output", None, "Optional path for the results as JSON.")
_REFERENCE = flags.DEFINE_string(
    "reference", None,
    "JSON lines of scripts/reference_benchmark.py: adds the side-by-side table and its targets.")

SMOKE_SETTINGS = {"model_name": "lenet300100", "batch_size": 8, "repeats": 1, "ks": (1,),
                  "memory_ks": (1, 3)}
"""`run_benchmark` keyword arguments that `--smoke` uses instead of the flags."""

TRAIN_CONFIG = types.SimpleNamespace(
    learning_rate=0.1, lr_schedule="cosine", num_epochs=1, lr_decay_fractions=(0.5, 0.75),
    momentum=0.9, weight_decay=5e-4,
)
"""`train_step.TrainHyperparams` of configs/default.py (the step cost does not depend on them)."""
SPARSITY = 0.9
"""Fraction of weights pruned (at random) in the masks of the masked training step."""

MASKED_OVER_DENSE_MAX = 1.05
PROSPR_K3_OVER_STEP_MAX = 10.0
"""Issue 11: full ProsPr at k = 3 costs at most 10 training steps, the reference's own ratio."""
REMAT_MEMORY_RATIO_MAX = 1.5
OVER_REFERENCE_MAX = {"train_step": 1.5, "full": 2.0, "first_order": 1.5}
"""Issue 11: the most prospr_jax / reference wall time of the training step, full ProsPr and
first-order ProsPr (set there for ResNet-20; checked for every setting with a reference)."""


@dataclasses.dataclass(frozen=True)
class Setup:
  """A freshly initialized model with synthetic data, shared by all measurements."""

  model: nn.Module
  params: PyTree
  state: PyTree  # non-params collections, e.g. {'batch_stats': ...}; {} for none
  batches: list[PyTree]  # enough distinct batches for the largest k (k + 1 each)
  loss_fn: LinenLoss


def make_setup(
    model_name: str,
    batch_size: int,
    input_shape: Sequence[int],
    num_classes: int,
    num_batches: int,
    seed: int = 0,
) -> Setup:
  """Initializes `model_name` and draws `num_batches` random `{'image', 'label'}` batches."""
  model = models.get_model(model_name, num_classes)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = models.init_variables(model, init_key, tuple(input_shape))
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  batches = [_random_batch(key, batch_size, input_shape, num_classes)
             for key in jax.random.split(data_key, num_batches)]
  return Setup(model, params, state, batches, LinenLoss(model))


def _random_batch(
    key: jax.Array, batch_size: int, input_shape: Sequence[int], num_classes: int
) -> dict[str, jax.Array]:
  """A batch of standard-normal images and uniform integer labels."""
  image_key, label_key = jax.random.split(key)
  return {"image": jax.random.normal(image_key, (batch_size, *input_shape), jnp.float32),
          "label": jax.random.randint(label_key, (batch_size,), 0, num_classes)}


def memory_stats(compiled: jax.stages.Compiled) -> dict[str, int]:
  """Byte counts from `compiled.memory_analysis()`, with `peak = argument + output + temp - alias`."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    raise RuntimeError(f"The {jax.default_backend()} backend gives no compiled memory analysis.")
  names = ("argument", "output", "temp", "alias")
  stats = {n: int(getattr(analysis, f"{n}_size_in_bytes")) for n in names}
  stats["peak"] = stats["argument"] + stats["output"] + stats["temp"] - stats["alias"]
  return stats


def compile_fn(jitted: Callable[..., Any], *args: Any) -> tuple[jax.stages.Compiled, float]:
  """Lowers and compiles a jitted function for `args`; returns it and the seconds spent."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def interleaved_run_ms(
    cases: dict[str, tuple[jax.stages.Compiled, Sequence[Any]]], repeats: int
) -> dict[str, float]:
  """Median wall time (ms) of each `compiled(*args)` in `cases` over `repeats` runs.

  Each function runs once as a warm-up, then the functions take turns (one run each per
  round), so that a change in background load hits all of them alike and the ratios stay fair.
  """
  for compiled, args in cases.values():
    jax.block_until_ready(compiled(*args))
  times: dict[str, list[float]] = {name: [] for name in cases}
  for _ in range(repeats):
    for name, (compiled, args) in cases.items():
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def random_masks(params: PyTree, sparsity: float, seed: int = 0) -> PyTree:
  """Bool masks pruning a random `sparsity` fraction of every prunable (ndim > 1) leaf."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  masks = [jax.random.uniform(k, p.shape) >= sparsity if p.ndim > 1 else jnp.ones(p.shape, bool)
           for k, p in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, masks)


def dense_optimizer(config: train_step.TrainHyperparams,
                    schedule: optax.Schedule) -> optax.GradientTransformation:
  """`train_step.make_optimizer`'s chain without its first element, `keep_masked`."""
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum or None),
  )


def train_states(setup: Setup) -> dict[str, train_step.TrainState]:
  """`{'masked': ..., 'dense': ...}` training states of the same model and masked params."""
  schedule = train_step.learning_rate_schedule(TRAIN_CONFIG, steps_per_epoch=1000)
  masks = random_masks(setup.params, SPARSITY)
  optimizers = {"masked": train_step.make_optimizer(TRAIN_CONFIG, schedule, masks),
                "dense": dense_optimizer(TRAIN_CONFIG, schedule)}
  return {
      name: train_step.TrainState.create(
          apply_fn=setup.model.apply, params=masks_lib.apply_masks(setup.params, masks),
          tx=tx, batch_stats=setup.state.get("batch_stats", {}), masks=masks)
      for name, tx in optimizers.items()
  }


def prospr_fn(
    setup: Setup, k: int, *, first_order: bool = False, remat: bool = False
) -> Callable[..., PyTree]:
  """Jitted `(params, state, batches) -> prospr_scores` with `k` inner steps."""
  return jax.jit(functools.partial(
      _prospr, loss_fn=setup.loss_fn, k=k, first_order=first_order, remat=remat))


def _prospr(params: PyTree, state: PyTree, batches: Sequence[PyTree], *, loss_fn: LinenLoss,
            k: int, first_order: bool, remat: bool) -> PyTree:
  """`prospr_scores` with `k` inner steps on `k + 1` batches (the library's default inner SGD)."""
  return prospr_scores(loss_fn, params, batches, state=state, num_steps=k,
                       first_order=first_order, remat=remat)


def snip_fn(setup: Setup) -> Callable[..., PyTree]:
  """Jitted `(params, state, batch) -> snip_scores` on one batch."""
  return jax.jit(lambda params, state, batch: snip_scores(setup.loss_fn, params, batch, state=state))


def prospr_args(setup: Setup, k: int) -> tuple[PyTree, PyTree, list[PyTree]]:
  """Arguments of `prospr_fn(setup, k)`: params, state and `k + 1` distinct batches."""
  return setup.params, setup.state, setup.batches[: k + 1]


def reference_k(ks: Sequence[int]) -> int:
  """3 if in `ks`, else the largest k <= 3, else the smallest k."""
  small = [k for k in ks if k <= 3]
  return max(small) if small else min(ks)


def prospr_name(k: int, remat: bool) -> str:
  """The name of the full-ProsPr timing case with `k` inner steps."""
  return f"prospr_k{k}_remat" if remat else f"prospr_k{k}"


def timing_cases(
    setup: Setup, ks: Sequence[int], remat: bool = False
) -> dict[str, tuple[Callable[..., Any], tuple]]:
  """`{name: (jitted function, args)}`: the two training steps, full ProsPr (with `remat`) for
  each k, and first-order ProsPr and SNIP at the reference k."""
  cases = {f"train_step_{name}": (train_step.train_step, (state, setup.batches[0]))
           for name, state in train_states(setup).items()}
  cases |= {prospr_name(k, remat): (prospr_fn(setup, k, remat=remat), prospr_args(setup, k))
            for k in ks}
  k_ref = reference_k(ks)
  cases[f"prospr_first_order_k{k_ref}"] = (
      prospr_fn(setup, k_ref, first_order=True), prospr_args(setup, k_ref))
  cases["snip"] = (snip_fn(setup), (setup.params, setup.state, setup.batches[0]))
  return cases


def measure_times(
    setup: Setup, ks: Sequence[int], repeats: int, remat: bool = False
) -> dict[str, dict[str, float]]:
  """`{name: {'compile_ms', 'run_ms', 'peak_mib'}}` for every `timing_cases` entry (see
  `interleaved_run_ms`; 'peak_mib' is the compiled function's `memory_stats` peak)."""
  compiled, compile_ms = {}, {}
  for name, (jitted, args) in timing_cases(setup, ks, remat).items():
    executable, seconds = compile_fn(jitted, *args)
    compiled[name], compile_ms[name] = (executable, args), 1e3 * seconds
  run_ms = interleaved_run_ms(compiled, repeats)
  return {name: {"compile_ms": compile_ms[name], "run_ms": run_ms[name],
                 "peak_mib": memory_stats(executable)["peak"] / 2**20}
          for name, (executable, _) in compiled.items()}


def measure_memory(setup: Setup, memory_ks: Sequence[int]) -> dict[str, dict[str, dict]]:
  """`{'remat'|'no_remat': {str(k): memory stats + 'ratio' to the smallest k}}` (compile only);
  `{}` for no `memory_ks`."""
  if not memory_ks:
    return {}
  out = {}
  for remat in (False, True):
    table = {str(k): memory_stats(compile_fn(prospr_fn(setup, k, remat=remat),
                                             *prospr_args(setup, k))[0])
             for k in memory_ks}
    base = table[str(min(memory_ks))]
    for stats in table.values():
      stats["ratio"] = stats["peak"] / base["peak"]
    out["remat" if remat else "no_remat"] = table
  return out


def ratios(
    times: dict[str, dict[str, float]], ks: Sequence[int], remat: bool = False
) -> dict[str, float]:
  """Run-time ratios: ProsPr / masked step per k, first-order and SNIP / ProsPr, masked / dense."""
  run = {name: t["run_ms"] for name, t in times.items()}
  k_ref = reference_k(ks)
  out = {f"{prospr_name(k, remat)} / train_step_masked":
         run[prospr_name(k, remat)] / run["train_step_masked"] for k in ks}
  for name in (f"prospr_first_order_k{k_ref}", "snip"):
    out[f"{name} / {prospr_name(k_ref, remat)}"] = run[name] / run[prospr_name(k_ref, remat)]
  out["train_step_masked / train_step_dense"] = run["train_step_masked"] / run["train_step_dense"]
  return out


def read_reference(path: str) -> list[dict[str, Any]]:
  """The records of scripts/reference_benchmark.py's JSON-lines output (environment first)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def reference_comparison(
    results: dict[str, Any], records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
  """`results` beside the reference's timed jobs of the same setting (model name, batch size,
  input shape, classes): `{'environment', 'rows', 'steps_per_full'}`.

  Each row is `{'function', 'key', 'reference_ms', 'jax_ms', 'jax_over_reference'}` for the
  training step, full ProsPr and first-order ProsPr at the reference k (`None` where a side
  was not measured); `steps_per_full` is full ProsPr / training step on each side.
  """
  cfg = results["config"]
  k = cfg["reference_k"]
  setting = {"model": cfg["model"], "batch_size": cfg["batch_size"],
             "input_shape": cfg["input_shape"], "num_classes": cfg["num_classes"]}

  def reference_ms(**fields: Any) -> float | None:
    wanted = setting | fields
    job = next((r for r in records if "run_ms" in r
                and all(r.get(name) == value for name, value in wanted.items())), None)
    return job["run_ms"] if job else None

  functions = [
      ("one training step", "train_step", "train_step_masked", {"kind": "train_step"}),
      (f"full ProsPr k={k}", "full", prospr_name(k, cfg["remat"]),
       {"kind": "prospr", "method": "full", "k": k}),
      (f"first-order ProsPr k={k}", "first_order", f"prospr_first_order_k{k}",
       {"kind": "prospr", "method": "first_order", "k": k}),
  ]
  rows = []
  for label, key, name, fields in functions:
    ref, ours = reference_ms(**fields), results["times"][name]["run_ms"]
    rows.append({"function": label, "key": key, "reference_ms": ref, "jax_ms": ours,
                 "jax_over_reference": ours / ref if ref else None})
  step, full = rows[0], rows[1]
  steps_per_full = {
      "reference": full["reference_ms"] / step["reference_ms"]
      if full["reference_ms"] and step["reference_ms"] else None,
      "jax": full["jax_ms"] / step["jax_ms"]}
  environment = next((r for r in records if r.get("kind") == "environment"), None)
  return {"environment": environment, "rows": rows, "steps_per_full": steps_per_full}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The targets as `{'name', 'value', 'limit', 'met'}` (value <= limit is met); the memory
  target only with a memory table, the prospr_jax / reference ones only with a reference."""
  cfg = results["config"]
  k_ref = cfg["reference_k"]
  checks = [
      (f"full ProsPr k={k_ref} / masked train step",
       results["ratios"][f"{prospr_name(k_ref, cfg['remat'])} / train_step_masked"],
       PROSPR_K3_OVER_STEP_MAX),
      ("masked / dense train step", results["ratios"]["train_step_masked / train_step_dense"],
       MASKED_OVER_DENSE_MAX),
  ]
  if results["memory"]:
    memory = results["memory"]["remat"]
    k_max, k_min = max(memory, key=int), min(memory, key=int)
    checks.append((f"remat peak memory k={k_max} / k={k_min}", memory[k_max]["ratio"],
                   REMAT_MEMORY_RATIO_MAX))
  for row in (results.get("reference") or {}).get("rows", []):
    if row["jax_over_reference"] is not None:
      checks.append((f"{row['function']}: prospr_jax / reference", row["jax_over_reference"],
                     OVER_REFERENCE_MAX[row["key"]]))
  return [{"name": n, "value": v, "limit": lim, "met": bool(v <= lim)} for n, v, lim in checks]


def device_info() -> dict[str, str]:
  """The first device, its kind and platform."""
  device = jax.devices()[0]
  return {"device": str(device), "device_kind": device.device_kind, "platform": device.platform}


def run_benchmark(
    model_name: str = "small_convnet",
    batch_size: int = 128,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    repeats: int = 5,
    ks: Sequence[int] = (1, 3, 10),
    memory_ks: Sequence[int] = (1, 3, 10, 30),
    remat: bool = False,
    reference: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Runs every measurement and returns a JSON-serializable results dict.

  Keys: 'code' (`provenance.code_version`: the git commit it ran on), 'device' (see
  `device_info`), 'config', 'times'
  (`{name: {'compile_ms', 'run_ms', 'peak_mib'}}`), 'ratios' (`{'a / b': float}`), 'memory'
  (see `measure_memory`), 'reference' (`reference_comparison` with the `reference` records,
  None without) and 'targets'. `remat` times full ProsPr with `remat=True`.
  """
  if repeats < 1 or not ks:
    raise ValueError("Need repeats >= 1 and non-empty ks.")
  ks, memory_ks = sorted(set(ks)), sorted(set(memory_ks))
  setup = make_setup(model_name, batch_size, input_shape, num_classes,
                     num_batches=max(ks + memory_ks) + 1)
  times = measure_times(setup, ks, repeats, remat)
  results = {
      "code": provenance.code_version(),
      "device": device_info(),
      "config": {"model": model_name, "batch_size": batch_size, "input_shape": list(input_shape),
                 "num_classes": num_classes, "repeats": repeats, "ks": ks, "memory_ks": memory_ks,
                 "remat": remat, "reference_k": reference_k(ks), "masked_sparsity": SPARSITY,
                 "num_params": sum(int(p.size) for p in jax.tree.leaves(setup.params))},
      "times": times,
      "ratios": ratios(times, ks, remat),
      "memory": measure_memory(setup, memory_ks),
  }
  results["reference"] = reference_comparison(results, reference) if reference else None
  results["targets"] = targets(results)
  return results


def _memory_table(memory: dict[str, dict[str, dict]]) -> list[str]:
  """Lines of the ProsPr meta-gradient memory table of `measure_memory`'s results."""
  lines = ["ProsPr meta-gradient compiled memory (MiB); peak = argument + output + temp - alias;",
           "args hold params, state and the k + 1 input batches; ratio = peak / peak at the "
           "smallest k",
           f"{'k':>4}" + "".join(f"{h:>11}" for h in
                                 ("args", "temp", "peak", "ratio", "args(r)", "temp(r)",
                                  "peak(r)", "ratio(r)")) + "   (r) = remat=True"]
  mib = 1 / 2**20
  for k in memory["remat"]:
    row = [f"{k:>4}"]
    for variant in ("no_remat", "remat"):
      s = memory[variant][k]
      row += [f"{s['argument'] * mib:>11.2f}", f"{s['temp'] * mib:>11.2f}",
              f"{s['peak'] * mib:>11.2f}", f"{s['ratio']:>11.2f}"]
    lines.append("".join(row))
  return lines + [""]


def _reference_table(comparison: dict[str, Any]) -> list[str]:
  """Lines of the side-by-side table of `reference_comparison`."""
  env = comparison["environment"] or {}
  cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
  lines = [f"side by side with the reference (the authors' PyTorch code, torch "
           f"{env.get('torch', '-')}, {env.get('cpu_threads', '-')} CPU threads, "
           f"{env.get('gpu') or 'no GPU'})",
           f"{'':<30}{'reference ms':>14}{'prospr_jax ms':>15}{'prospr_jax / ref':>18}"]
  lines += [f"{r['function']:<30}{cell(r['reference_ms'], '.1f'):>14}"
            f"{r['jax_ms']:>15.1f}{cell(r['jax_over_reference'], '.2f'):>18}"
            for r in comparison["rows"]]
  steps = comparison["steps_per_full"]
  lines.append(f"{'full ProsPr / training step':<30}{cell(steps['reference'], '.2f'):>14}"
               f"{steps['jax']:>15.2f}")
  return lines + [""]


def format_report(results: dict[str, Any]) -> str:
  """Human-readable tables of `run_benchmark`'s results."""
  cfg, dev = results["config"], results["device"]
  lines = [f"code: {provenance.describe_code_version(results['code'])}",
           f"device: {dev['device']}  kind: {dev['device_kind']}  platform: {dev['platform']}",
           f"model: {cfg['model']} ({cfg['num_params']:,} params)  batch: {cfg['batch_size']}  "
           f"input: {cfg['input_shape']}  repeats: {cfg['repeats']} (median after 1 warm-up)",
           "", f"{'function':<32}{'compile ms':>12}{'run ms':>12}{'peak MiB':>12}"]
  lines += [f"{name:<32}{t['compile_ms']:>12.1f}{t['run_ms']:>12.3f}{t['peak_mib']:>12.2f}"
            for name, t in results["times"].items()]
  lines += ["", f"{'run-time ratio':<50}{'value':>10}"]
  lines += [f"{name:<50}{value:>10.3f}" for name, value in results["ratios"].items()]
  lines.append("")
  if results["memory"]:
    lines += _memory_table(results["memory"])
  if results.get("reference"):
    lines += _reference_table(results["reference"])
  lines += [f"target {t['name']}: {t['value']:.3f} <= {t['limit']}: "
            f"{'met' if t['met'] else 'MISSED'}" for t in results["targets"]]
  return "\n".join(lines)


def _ints(values: Sequence[str]) -> tuple[int, ...]:
  return tuple(int(v) for v in values)


def _model_settings() -> list[dict[str, Any]]:
  """`model_name`, `input_shape` and `num_classes` of each --preset, else from their own flags."""
  own = (_MODEL, _INPUT_SHAPE, _NUM_CLASSES)
  if not _PRESET.value:
    return [{"model_name": _MODEL.value, "input_shape": _ints(_INPUT_SHAPE.value),
             "num_classes": _NUM_CLASSES.value}]
  if any(f.present for f in own):
    raise app.UsageError("--preset sets --model, --input_shape and --num_classes; give either.")
  return [PRESETS[name] for name in _PRESET.value]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  common = {"batch_size": _BATCH_SIZE.value, "repeats": _REPEATS.value, "ks": _ints(_KS.value),
            "memory_ks": _ints(_MEMORY_KS.value), "remat": _REMAT.value,
            "reference": read_reference(_REFERENCE.value) if _REFERENCE.value else None}
  runs = []
  for settings in _model_settings():
    kwargs = settings | common | (SMOKE_SETTINGS if _SMOKE.value else {})
    runs.append(run_benchmark(**kwargs))
    print(format_report(runs[-1]), end="\n\n", flush=True)
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
      json.dump({"runs": runs}, f, indent=2)
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
