r"""What channel pruning buys after compaction: params, FLOPs and inference time vs. dense.

  python experiments/compaction_benchmark.py                      # vgg16 + resnet20, ~2 min on CPU
  python experiments/compaction_benchmark.py --models=vgg11 --sparsities=0.5 --repeats=3
  python experiments/compaction_benchmark.py --method=snip --output=/tmp/compaction.json

For each model (random init, BatchNorm statistics perturbed so BN is not the identity) and
each channel sparsity, channel-group masks are built with `structured_prune` (`--method`,
default 'random': roughly the same fraction per layer, so the numbers show the effect of the
sparsity rather than of a method's layer allocation), the masked model is compacted with
`zoo_compaction.compact`, and printed side by side with the dense model:

  * params: all parameters of the compacted vs. the dense model;
  * MACs: multiply-accumulates of the convs and dot products per example, counted from the
    traced program's shapes (`structured.count_macs`);
  * XLA flops: `jit(f).lower(...).compile().cost_analysis()['flops']` of a whole eval-mode
    forward pass (all ops), where the backend reports it;
  * time: jitted eval-mode forward pass on a `[--batch_size, 32, 32, 3]` random batch, the
    median over `--repeats` runs after a warm-up, the dense model and the compacted ones of
    every sparsity taking turns so that background load hits them alike.

Caveat (XLA:CPU, jax 0.10): convolutions with the dense VGG's widths (64, 128, 256, 512) run
several times slower per MAC than with nearby widths (a VGG-16 with every width minus one
takes ~1/3 of the dense time), so on CPU the time ratio of a compacted VGG can be far below
its MAC ratio; the MAC and flop ratios are the backend-independent measure.

The check column is the largest |logit difference| between the compacted and the masked
model on the benchmark batch (should be ~1e-6).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from prospr_jax.models import zoo_compaction
from prospr_jax import models, structured
from prospr_jax import masks as masks_lib
from prospr_jax.tree_types import PyTree


_MODELS = flags.DEFINE_list("models", ["vgg16", "resnet20"], "Names for models.get_model.")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0.3", "0.5", "0.7"], "Channel sparsities.")
_METHOD = flags.DEFINE_string("method", "random", f"One of {structured.structured_methods()}.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of the timed forward pass.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per function (median reported).")
_OUTPUT = flags.DEFINE_string("output", None, "Optional path for the results as JSON.")

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def perturb_batch_stats(variables: PyTree, key: jax.Array) -> PyTree:
  """Random BN running means N(0, 0.1) and variances U[0.5, 2], so eval-mode BN is not trivial."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables.get("batch_stats", {}))
  new = []
  for i, (path, x) in enumerate(leaves):
    k = jax.random.fold_in(key, i)
    is_var = masks_lib.path_str(path).endswith("var")
    new.append(jax.random.uniform(k, x.shape, minval=0.5, maxval=2.0) if is_var
               else 0.1 * jax.random.normal(k, x.shape))
  return {**variables, "batch_stats": jax.tree.unflatten(treedef, new)}


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """XLA's flop estimate of `jit(fn)(*args)`, or NaN where the backend gives none."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis.get("flops", np.nan)) if analysis else float("nan")


def interleaved_median_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
  """Median wall time (ms) of each zero-argument function; one warm-up each, then turns."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _forward(model: nn.Module) -> Callable[[PyTree, jax.Array], jax.Array]:
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def benchmark_model(
    name: str, sparsities: Sequence[float], method: str, batch_size: int, repeats: int
) -> list[dict[str, Any]]:
  """One row per sparsity comparing the compacted with the dense `name` (see module docstring)."""
  model = models.get_model(name, NUM_CLASSES)
  key_init, key_bn, key_x, key_prune = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(key_x, (batch_size, *INPUT_SHAPE))
  variables = perturb_batch_stats(model.init(key_init, x[:1], train=False), key_bn)
  batch = {"image": x, "label": jnp.arange(batch_size) % NUM_CLASSES}
  dense_fwd = _forward(model)
  dense = {"params": structured.count_params(variables["params"]),
           "macs": structured.count_macs(dense_fwd, variables, x),
           "flops": xla_flops(dense_fwd, variables, x)}
  rows, fns = [], {"dense": lambda: dense_fwd(variables, x)}
  for sparsity in sparsities:
    masks = structured.structured_prune(
        method, model, variables, batch, sparsity, key=key_prune, min_kept_per_group=1
    )
    small, small_vars = zoo_compaction.compact(model, variables, masks, x)
    small_fwd = _forward(small)
    masked = {**variables, "params": masks_lib.apply_masks(variables["params"], masks)}
    err = float(jnp.max(jnp.abs(small_fwd(small_vars, x) - dense_fwd(masked, x))))
    fns[sparsity] = lambda f=small_fwd, v=small_vars: f(v, x)
    rows.append({"model": name, "sparsity": sparsity, "method": method,
                 "params": structured.count_params(small_vars["params"]),
                 "dense_params": dense["params"],
                 "macs": structured.count_macs(small_fwd, small_vars, x),
                 "dense_macs": dense["macs"], "flops": xla_flops(small_fwd, small_vars, x),
                 "dense_flops": dense["flops"], "max_abs_logit_diff": err})
  ms = interleaved_median_ms(fns, repeats)
  for row in rows:
    row.update(ms=ms[row["sparsity"]], dense_ms=ms["dense"])
    print(format_row(row), flush=True)
  return rows


HEADER = (f"{'model':<9} {'sparsity':>8} {'params':>19} {'ratio':>6} {'MACs ratio':>10} "
          f"{'XLA flops ratio':>15} {'time ms (compact/dense)':>23} {'ratio':>6} {'check':>8}")


def format_row(r: dict[str, Any]) -> str:
  """One table line: compacted / dense for params, MACs, XLA flops and time."""
  return (f"{r['model']:<9} {r['sparsity']:>8.2f} {r['params']:>9,}/{r['dense_params']:<9,} "
          f"{r['params'] / r['dense_params']:>6.3f} {r['macs'] / r['dense_macs']:>10.3f} "
          f"{r['flops'] / r['dense_flops']:>15.3f} "
          f"{r['ms']:>11.2f}/{r['dense_ms']:<11.2f} {r['ms'] / r['dense_ms']:>6.3f} "
          f"{r['max_abs_logit_diff']:>8.1e}")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sparsities = [float(s) for s in _SPARSITIES.value]
  print(f"device: {jax.devices()[0].device_kind}  input: [{_BATCH_SIZE.value}, "
        f"{', '.join(map(str, INPUT_SHAPE))}]  method: {_METHOD.value}  repeats: "
        f"{_REPEATS.value} (median after 1 warm-up); columns are compacted / dense")
  print(HEADER)
  rows = []
  for name in _MODELS.value:
    rows += benchmark_model(name, sparsities, _METHOD.value, _BATCH_SIZE.value, _REPEATS.value)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
