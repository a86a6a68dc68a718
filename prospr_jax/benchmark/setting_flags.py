"""Flags shared by the benchmark binaries that measure one zoo setting on synthetic data.

Each `define_*` function defines its flags once, in the binary that calls it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from prospr_jax.benchmark.synthetic_setup import Setup, make_setup
from prospr_jax.experiment import compile_cache

NUM_CLASSES = 10
"""Classes of the binaries' settings (all but experiments/benchmark.py's --num_classes)."""


@dataclasses.dataclass(frozen=True)
class SettingFlags:
  """--model, --input_shape and --batch_size."""

  model: flags.FlagHolder[str]
  input_shape: flags.FlagHolder[list[str]]
  batch_size: flags.FlagHolder[int]

  def shape(self) -> tuple[int, ...]:
    """--input_shape as integers."""
    try:
      return tuple(int(s) for s in self.input_shape.value)
    except ValueError as e:
      raise app.UsageError(
          f"--input_shape takes integers H,W,C, got {self.input_shape.value}.") from e

  def make_setup(self, num_batches: int) -> Setup:
    """`synthetic_setup.make_setup` of the flags' setting with `num_batches` batches."""
    return make_setup(self.model.value, self.batch_size.value, self.shape(), NUM_CLASSES,
                      num_batches=num_batches)

  def config(self) -> dict[str, Any]:
    """The setting as a record's config fields."""
    return {"model": self.model.value, "batch_size": self.batch_size.value,
            "input_shape": list(self.shape()), "num_classes": NUM_CLASSES}


def define_setting_flags(batch_size: int = 128) -> SettingFlags:
  """Defines --model (default small_convnet), --input_shape (28,28,1) and --batch_size."""
  return SettingFlags(
      model=flags.DEFINE_string("model", "small_convnet",
                                "A name for prospr_jax.models.get_model."),
      input_shape=flags.DEFINE_list("input_shape", ["28", "28", "1"], "Input shape H,W,C."),
      batch_size=flags.DEFINE_integer("batch_size", batch_size,
                                      "Batch size of every measured function."))


def define_repeats_flag() -> flags.FlagHolder[int]:
  """Defines --repeats (default 5): the timed runs of each function."""
  return flags.DEFINE_integer("repeats", 5, "Timed runs per function (median reported).")


def define_output_flag() -> flags.FlagHolder[str | None]:
  """Defines --output: an optional path for the results (`result_record`) as JSON."""
  return flags.DEFINE_string("output", None, "Optional path for the results as JSON.")


def define_compile_cache_flag() -> flags.FlagHolder[str]:
  """Defines --compile_cache_dir, off by default: a benchmark measures compile times."""
  return compile_cache.define_flag(compile_cache.DISABLED)


def begin(argv: Sequence[str], compile_cache_dir: flags.FlagHolder[str]) -> None:
  """The start of every benchmark binary's `main`: no positional arguments, then JAX's
  persistent compilation cache as --compile_cache_dir says (off unless given)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compile_cache.enable(compile_cache_dir.value)
