"""What a person watching a run reads: progress lines with the time left, and a final summary.

The library logs to the standard `logging` logger `prospr_jax`; `show_on` prints its INFO lines
on a stream whatever the verbosity of absl's logs (orbax, tfds, JAX), which the experiment
binaries keep at warnings unless `--verbosity` asks for more.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

LOGGER = "prospr_jax"


def show_on(stream: TextIO) -> None:
  """Prints the `prospr_jax` logger's INFO lines on `stream` as 'HH:MM:SS message'."""
  handler = logging.StreamHandler(stream)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger = logging.getLogger(LOGGER)
  logger.handlers = [handler]
  logger.setLevel(logging.INFO)
  logger.propagate = False  # not again through absl's handler at --verbosity=0


def format_duration(seconds: float) -> str:
  """`seconds` for people: '42s', '3m 05s', '2h 07m'."""
  seconds = round(seconds)
  if seconds < 60:
    return f"{seconds}s"
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f"{minutes}m {seconds:02d}s"
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h {minutes:02d}m"


class Progress:
  """Progress lines of a training loop: epoch, step/total, loss, steps/s and time left.

  Steps/s is measured over the last interval. The time left divides the remaining steps by
  the pace since the first line (evaluations and checkpoints included; the first interval,
  which includes compilation, is left out once a second line exists).
  """

  def __init__(self, first_step: int, total_steps: int, steps_per_epoch: int,
               clock: Callable[[], float] = time.perf_counter):
    self._total = total_steps
    self._steps_per_epoch = steps_per_epoch
    self._clock = clock
    self._last = self._first = (first_step, clock())
    self._lines = 0

  def line(self, step: int, loss: float) -> tuple[str, float]:
    """The progress line at `step` (after `step` steps) and the steps/s of the last interval."""
    now = self._clock()
    rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
    if self._lines == 0:
      self._first = (step, now)
      pace = rate
    else:
      pace = (step - self._first[0]) / max(now - self._first[1], 1e-9)
    self._last = (step, now)
    self._lines += 1
    epoch = min((step - 1) // self._steps_per_epoch + 1, self._total // self._steps_per_epoch)
    left = (self._total - step) / pace
    return (f"epoch {epoch}/{self._total // self._steps_per_epoch}  step {step}/{self._total}  "
            f"loss {loss:.4f}  {rate:.1f} steps/s  {format_duration(left)} left", rate)


def summary(results: dict[str, Any], workdir: str) -> str:
  """A few lines about a finished run: method, weights kept, accuracy, time, where results are."""
  prune = results["config"]["prune"]
  kept = results["density"]["density/total"]
  epochs = len(results["history"])
  method = prune["method"] + (" (structured)" if prune["structured"] else "")
  return "\n".join([
      f"{method}: {100 * kept:.2f}% of the prunable weights kept "
      f"(sparsity {1 - kept:.4g})",
      f"test top-1 {100 * results['final_test_top1']:.2f}% after {epochs} epoch"
      f"{'s' if epochs != 1 else ''} (best {100 * results['best_test_top1']:.2f}%)",
      f"pruning {format_duration(results['prune_seconds'])}, "
      f"training {format_duration(results['train_seconds'])}",
      f"results: {os.path.join(workdir, 'results.json')} (masks.npz, checkpoints/, "
      "tensorboard/ beside it)",
  ])
