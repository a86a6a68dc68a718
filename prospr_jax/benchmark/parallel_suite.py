"""Data-parallel training throughput: the same global batch on 1 device vs sharded over all.

One jitted masked training step (`cost_cases.train_states`), its state on one device and its
batch there, against the state replicated and the batch sharded over every device
(`prospr_jax.experiment.distributed`), timed interleaved in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from prospr_jax.benchmark import cost_cases, result_record, timing
from prospr_jax.benchmark.synthetic_setup import make_setup
from prospr_jax.experiment import distributed, train_step

NUM_CLASSES = 10


def run_parallel_benchmark(model_name: str, batch_size: int, input_shape: Sequence[int],
                           repeats: int) -> dict[str, Any]:
  """A 'data_parallel' `result_record` whose 'throughput' holds the median step time ('<n>
  device(s) ms') and examples/s ('... examples/s') on 1 device and on all, and their ratio
  ('throughput ratio (all devices / 1 device)'); `batch_size` is the global batch."""
  setup = make_setup(model_name, batch_size, input_shape, NUM_CLASSES, num_batches=1)
  state = cost_cases.train_states(setup)["masked"]
  mesh = distributed.data_mesh()
  one = jax.devices()[0]
  cases = {
      "1 device": (jax.device_put(state, one), jax.device_put(setup.batches[0], one)),
      f"{jax.device_count()} devices": (distributed.replicate(state, mesh),
                                        distributed.shard_batch(setup.batches[0], mesh)),
  }
  calls = {name: timing.compile_call(train_step.train_step, *args) for name, args in cases.items()}
  ms = timing.interleaved_median_ms(calls, repeats)
  throughput = {f"{name} ms": t for name, t in ms.items()}
  throughput.update({f"{name} examples/s": 1e3 * batch_size / t for name, t in ms.items()})
  names = list(ms)
  throughput["throughput ratio (all devices / 1 device)"] = ms[names[0]] / ms[names[1]]
  config = {"model": model_name, "batch_size": batch_size, "input_shape": list(input_shape),
            "repeats": repeats, "devices": [str(d) for d in jax.devices()]}
  return result_record.new_record("data_parallel", config, throughput=throughput)
