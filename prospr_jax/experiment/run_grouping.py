"""Which runs may train as one population: those whose configs differ only in `MEMBER_FIELDS`
(they change the masks, the initialization and the data order, not the program)."""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from prospr_jax.experiment import config_checks

MEMBER_FIELDS = ("seed", "sweep_arm", "prune.method", "prune.sparsity", "prune.allocation",
                 "prune.sanity_check")
"""Dotted config fields in which the members of one population may differ (they change only
the masks, the initialization and the data order); all other fields must be equal."""


def config_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`{'prune.method': 'snip', ...}`: every leaf field of `config` by its dotted name."""
  return config_checks.dotted_leaves(json.loads(config.to_json()))


def shared_fields(config: ml_collections.ConfigDict) -> str:
  """`config`'s fields outside `MEMBER_FIELDS` as canonical JSON: the runs of equal strings
  may train as one population."""
  fields = config_fields(config)
  return json.dumps({k: v for k, v in fields.items() if k not in MEMBER_FIELDS}, sort_keys=True,
                    default=str)
