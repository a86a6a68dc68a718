"""Run in a subprocess with 4 forced CPU devices: 4-device results vs 1-device results.

Prints one JSON object: for ProsPr, SNIP and GraSP whether the masks computed from batches
sharded over 4 devices equal those from the same batches on 1 device; the largest ProsPr score
difference and over how many devices the sharded scores lie; the largest param difference
after one training step and over how many devices it ran.

Usage: `multi_device_check.py [WATCHDOG_SECONDS]`. If the check has not finished after
WATCHDOG_SECONDS, it prints every thread's Python stack to stderr and exits with
`WATCHDOG_EXIT_CODE`. Every computation is waited for before the next is dispatched, so at
most one multi-device program is in flight.
"""

import faulthandler
import json
import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax

import prospr_jax as pj
from prospr_jax import models
from prospr_jax.experiment import distributed, train
from prospr_jax.adapters import LinenLoss


WATCHDOG_EXIT_CODE = 75


def _start_watchdog(seconds: float) -> None:
  """After `seconds`, dumps all threads' stacks to stderr and exits with WATCHDOG_EXIT_CODE."""
  def fire():
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(WATCHDOG_EXIT_CODE)

  timer = threading.Timer(seconds, fire)
  timer.daemon = True
  timer.start()


def _max_abs_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _num_devices(tree) -> int:
  return len(jax.tree.leaves(tree)[0].sharding.device_set)


def main() -> None:
  if len(sys.argv) > 1:
    _start_watchdog(float(sys.argv[1]))
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  assert jax.device_count() == 4, jax.devices()
  mesh = distributed.data_mesh()
  one_device = jax.devices()[0]
  # (place params/state, place a batch): on one device, or replicated/sharded over the mesh.
  placements = [
      (lambda t: jax.device_put(t, one_device), lambda b: jax.device_put(b, one_device)),
      (lambda t: distributed.replicate(t, mesh), lambda b: distributed.shard_batch(b, mesh)),
  ]
  model = models.get_model("small_convnet", 10)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(16, 12, 12, 1)).astype(np.float32),
              "label": rng.integers(0, 10, 16).astype(np.int32)} for _ in range(4)]
  variables = models.init_variables(model, jax.random.PRNGKey(0), (12, 12, 1))
  state = {"batch_stats": variables["batch_stats"]}
  out = {}
  for method, num_batches, options in [("prospr", 4, {"num_steps": 3}), ("snip", 2, {}),
                                       ("grasp", 2, {})]:
    masks = [pj.prune(method, put(variables["params"]), 0.9, loss_fn=LinenLoss(model),
                      state=put(state), batches=[put_b(b) for b in batches[:num_batches]],
                      **options)
             for put, put_b in placements]
    out[method] = _max_abs_diff(*masks) == 0
  scores = [pj.prospr_scores(LinenLoss(model), put(variables["params"]),
                             [put_b(b) for b in batches], state=put(state), num_steps=3)
            for put, put_b in placements]
  out["max_score_diff"] = _max_abs_diff(*scores)
  out["max_score"] = max(float(jnp.max(s)) for s in jax.tree.leaves(scores[0]))
  out["score_devices"] = _num_devices(scores[1])

  config = train.ml_collections.ConfigDict({"train": {"weight_decay": 5e-4, "momentum": 0.9}})
  masks = pj.prune("magnitude", variables["params"], 0.5)
  stepped = []
  for put, put_b in placements:
    ts = put(train.create_train_state(config.train, model, variables, masks,
                                      optax.constant_schedule(0.1)))
    stepped.append(train.train_step(ts, put_b(batches[0]))[0].params)
  out["max_param_diff"] = _max_abs_diff(*stepped)
  out["train_devices"] = _num_devices(stepped[1])
  print(json.dumps(out))


if __name__ == "__main__":
  main()
