r"""Data-parallel training throughput: the same global batch on 1 device vs sharded over all.

On CPU, force several host devices (they share the machine's cores):

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python experiments/parallel_benchmark.py

Prints examples/s of one jitted masked training step both ways, measured interleaved in one
process, and their ratio. On a multi-GPU/TPU host it runs unchanged over the real devices.
"""

import json
from collections.abc import Sequence

import jax
from absl import app, flags

import benchmark  # experiments/benchmark.py: shared setup and timing helpers
from prospr_jax.experiment import distributed, train

# Flags --model, --batch_size (global) and --repeats are the ones benchmark.py defines.
FLAGS = flags.FLAGS


def measure(model_name: str, batch_size: int, repeats: int) -> dict[str, float]:
  """Median step time (ms) and examples/s on 1 device and on all devices (data-parallel)."""
  setup = benchmark.make_setup(model_name, batch_size, (28, 28, 1), 10, num_batches=1)
  state = benchmark.train_states(setup)["masked"]
  mesh = distributed.data_mesh()
  one = jax.devices()[0]
  cases = {
      "1 device": (jax.device_put(state, one), jax.device_put(setup.batches[0], one)),
      f"{jax.device_count()} devices": (distributed.replicate(state, mesh),
                                        distributed.shard_batch(setup.batches[0], mesh)),
  }
  compiled = {name: (benchmark.compile_fn(train.train_step, *args)[0], args)
              for name, args in cases.items()}
  ms = benchmark.interleaved_run_ms(compiled, repeats)
  out = {f"{name} ms": t for name, t in ms.items()}
  out.update({f"{name} examples/s": 1e3 * batch_size / t for name, t in ms.items()})
  names = list(ms)
  out["throughput ratio (all devices / 1 device)"] = ms[names[0]] / ms[names[1]]
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  print(f"devices: {jax.devices()}")
  print(json.dumps(measure(FLAGS.model, FLAGS.batch_size, FLAGS.repeats), indent=2))


if __name__ == "__main__":
  app.run(main)
