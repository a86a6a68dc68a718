"""Run in a subprocess with 4 forced CPU devices: a population sharded over 4 devices vs 1.

Prints one JSON object: the device count; over how many devices the trained members lie; the
largest param difference between the population trained sharded over a 4-device 'members'
mesh and trained on one device (3 steps, default formulation); whether their test top-1 are
equal; and the error for a population of 6 members on 4 devices.
"""

import json

import jax
import numpy as np

import test_population as tp  # tests/ is this script's directory, hence on sys.path
from conftest import TinyBNCNN
from prospr_jax.experiment import population as pop_lib


def main() -> None:
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  mesh = pop_lib.members_mesh()
  model = TinyBNCNN(num_classes=tp.NUM_CLASSES)
  states = [tp.new_member(model, init_seed=i, mask_seed=100 + i) for i in range(4)]
  seeds = range(4)
  results = {}
  for name, place, data, test, step_mesh in [
      ("one", lambda p: p, tp.TRAIN, tp.TEST, None),
      ("four", lambda p: pop_lib.place_population(p, mesh),
       jax.device_put(tp.TRAIN, pop_lib.replicated(mesh)),
       jax.device_put(tp.TEST, pop_lib.replicated(mesh)), mesh)]:
    population = place(pop_lib.create_population(states, seeds, tp.TRAIN.num_examples))
    step_fn = pop_lib.make_train_step(tp.BATCHING, mesh=step_mesh)
    population, _ = pop_lib.train_steps(step_fn, population, data, range(3))
    top1 = pop_lib.make_evaluate(mesh=step_mesh)(population, test)["top1"]
    results[name] = (population, np.asarray(top1))
  params = [results[k][0].train.params for k in ("one", "four")]
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(*map(jax.tree.leaves, params)))
  try:
    pop_lib.place_population(
        pop_lib.create_population(states + states[:2], range(6), tp.TRAIN.num_examples), mesh)
    error = ""
  except ValueError as e:
    error = str(e)
  print(json.dumps({
      "devices": jax.device_count(),
      "member_devices": len(jax.tree.leaves(params[1])[0].sharding.device_set),
      "max_param_diff": diff,
      "top1_equal": bool(np.array_equal(results["one"][1], results["four"][1])),
      "error": error,
  }))


if __name__ == "__main__":
  main()
