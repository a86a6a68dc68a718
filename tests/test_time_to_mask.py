"""Smoke test of the time-to-mask suite (`prospr_jax.benchmark.time_to_mask`, run by
experiments/time_to_mask_benchmark.py): runs it in-process on a tiny setting (no timing
asserts)."""

import json
import math

import pytest

from prospr_jax.benchmark import result_record, time_to_mask
from prospr_jax.benchmark.synthetic_setup import make_setup

_CONFIG = {"model": "small_convnet", "batch_size": 2, "input_shape": [8, 8, 1],
           "num_classes": 10}


@pytest.fixture(scope="module")
def setup():
  return make_setup("small_convnet", 2, (8, 8, 1), 10, num_batches=3)


def test_every_k_and_unroll_has_a_compile_time_run_time_and_remat_peak(setup):
  record = time_to_mask.run_time_to_mask(setup, _CONFIG, ks=(2,), unrolls=(True, 1),
                                         repeats=1)
  assert [(row["k"], repr(row["unroll"])) for row in record["rows"]] == [(2, "True"), (2, "1")]
  for row in record["rows"]:
    for key in ("compile_s", "run_ms", "remat_peak_mib"):
      assert math.isfinite(row[key]) and row[key] > 0, row
  assert json.loads(json.dumps(record)) == record
  table = time_to_mask.format_time_to_mask(record)
  assert "k=  2 unroll=1    :" in table and "k=  2: shortest cold time" in table


def test_too_few_batches_and_a_bad_unroll_are_errors(setup):
  with pytest.raises(ValueError, match="needs 4 batches"):
    time_to_mask.run_time_to_mask(setup, _CONFIG, ks=(3,), unrolls=(True,))
  with pytest.raises(ValueError, match="unroll"):
    time_to_mask.run_time_to_mask(setup, _CONFIG, ks=(1,), unrolls=(0,))


def test_the_record_names_its_suite(setup):
  record = time_to_mask.run_time_to_mask(setup, _CONFIG, ks=(1,), unrolls=(1,), repeats=1,
                                         remat_memory=False)
  assert record["benchmark"] == "time_to_mask"
  assert set(result_record.new_record("x", {})) <= set(record)
  assert "remat_peak_mib" not in record["rows"][0]
