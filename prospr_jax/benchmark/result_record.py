"""The one result format of the benchmarks: a JSON object stamped with the code and the device.

A record is a JSON-serializable dict with these keys, then the suite's own measurements under
keys that each suite's `run_*` function documents:

  'benchmark'    the suite's name, e.g. 'prospr_cost' or 'compaction';
  'code'         `provenance.code_version()`: `{'git_commit', 'git_dirty'}` of the checkout;
  'jax_version'  `jax.__version__`;
  'device'       `device_info()`: `{'device', 'device_kind', 'platform'}` of the first device;
  'config'       what was measured (the suite's settings).

A binary writes one record, or `{'runs': [record, ...]}` for several settings, with
`write_json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax

from prospr_jax.experiment import provenance


def device_info() -> dict[str, str]:
  """The first JAX device, its kind and platform (this initializes the backend)."""
  device = jax.devices()[0]
  return {"device": str(device), "device_kind": device.device_kind, "platform": device.platform}


def new_record(benchmark: str, config: Mapping[str, Any], /, **measurements: Any
               ) -> dict[str, Any]:
  """A record of suite `benchmark` measured with `config`, holding `measurements`."""
  reserved = {"benchmark", "code", "jax_version", "device", "config"} & set(measurements)
  if reserved:
    raise ValueError(f"Measurements may not use the record's own keys {sorted(reserved)}.")
  return {"benchmark": benchmark, "code": provenance.code_version(),
          "jax_version": jax.__version__, "device": device_info(), "config": dict(config),
          **measurements}


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
  """Writes `payload` (a record, or `{'runs': [...]}`) as indented JSON to `path`, making its
  folder if needed."""
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(payload, f, indent=2)
