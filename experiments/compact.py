r"""Compact a trained channel-pruned run into a smaller dense model; measure what it buys.

  python experiments/compact.py --workdir=workdirs/structured

Reads the run's config, masks and final checkpoint from `--workdir` (a run of
`prune_and_train.py` with `config.prune.structured=True`), builds the compacted model with
`prospr_jax.models.zoo_compaction.compact`, saves it to `<workdir>/compacted/`, and prints and writes
`<workdir>/compaction.json`: test top-1 of the masked and the compacted model, parameter and
MAC counts, and the median jitted inference time of one eval batch for both (taking turns,
`prospr_jax.benchmark.timing`), as ratios.
"""

import json
import os
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

from prospr_jax.models import zoo_compaction
from prospr_jax import masks as masks_lib, structured
from prospr_jax.benchmark import timing
from prospr_jax.experiment import compile_cache, train
from prospr_jax.experiment import data as data_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished structured run.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed inference runs (median reported).")
_COMPILE_CACHE_DIR = compile_cache.define_flag(None)
flags.mark_flags_as_required(["workdir"])




def main(argv: Sequence[str]) -> None:
  del argv
  compile_cache.enable(_COMPILE_CACHE_DIR.value)
  workdir = _WORKDIR.value
  config, model, state = train.load_run(workdir)
  masked = {"params": masks_lib.apply_masks(state.params, state.masks),
            "batch_stats": state.batch_stats}
  eval_batches = lambda: data_lib.eval_batches(
      config.dataset, batch_size=config.train.eval_batch_size, data_dir=config.data_dir)
  x = next(eval_batches())["image"]
  small, small_vars = zoo_compaction.compact(model, masked, state.masks, x)
  zoo_compaction.save(os.path.join(workdir, "compacted"), small, small_vars)

  states = {"masked": state.replace(params=masked["params"]),
            "compacted": state.replace(apply_fn=small.apply, params=small_vars["params"],
                                       batch_stats=small_vars["batch_stats"])}
  forward = {name: jax.jit(lambda v, x, m=m: m.apply(v, x, train=False))
             for name, m in (("masked", model), ("compacted", small))}
  variables = {"masked": masked, "compacted": small_vars}
  ms = timing.interleaved_median_ms(
      {name: lambda n=name: forward[n](variables[n], x) for name in variables}, _REPEATS.value)
  out = {}
  for name in ("masked", "compacted"):
    out[f"{name}_test_top1"] = train.evaluate(states[name], eval_batches())["top1"]
    out[f"{name}_params"] = structured.count_params(variables[name]["params"])
    out[f"{name}_macs"] = structured.count_macs(forward[name], variables[name], x)
    out[f"{name}_ms_per_batch"] = ms[name]
  for key in ("params", "macs", "ms_per_batch"):
    out[f"{key}_ratio"] = out[f"compacted_{key}"] / out[f"masked_{key}"]
  out["max_logit_diff"] = float(np.max(np.abs(
      np.asarray(forward["masked"](masked, x)) - np.asarray(forward["compacted"](small_vars, x)))))
  out["eval_batch"] = list(x.shape)
  out["device"] = jax.devices()[0].device_kind
  with open(os.path.join(workdir, "compaction.json"), "w") as f:
    json.dump(out, f, indent=2)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
