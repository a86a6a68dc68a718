"""A training epoch's running loss and accuracy sums, kept in checkpoint metadata.

The sums are plain floats folded in at fixed steps (the ends of epochs and the checkpoint
steps), so a run resumed from a checkpoint reports the same epoch means as an uninterrupted
one, and a non-finite loss is found at the first fold after it (`fold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def empty_sums() -> dict[str, float]:
  """No steps yet: `{'steps': 0, 'loss': 0.0, 'accuracy': 0.0}`."""
  return {"steps": 0, "loss": 0.0, "accuracy": 0.0}


def fold(sums: dict[str, float], losses: Sequence[Any], accuracies: Sequence[Any],
         first_step: int) -> int | None:
  """Adds the per-step `losses` and `accuracies` (scalars; steps `first_step, ...`, 1-based)
  to `sums` in place, up to the first non-finite loss; returns that step's number, or None."""
  losses = np.asarray(losses, np.float64).reshape(-1)
  accuracies = np.asarray(accuracies, np.float64).reshape(-1)
  bad = np.flatnonzero(~np.isfinite(losses))
  stop = int(bad[0]) if bad.size else len(losses)
  sums["steps"] += stop
  sums["loss"] += float(losses[:stop].sum())
  sums["accuracy"] += float(accuracies[:stop].sum())
  return first_step + stop if bad.size else None


def epoch_record(epoch: int, sums: dict[str, float]) -> dict[str, float]:
  """`{'epoch', 'train_loss', 'train_accuracy'}`: the means of an epoch's `sums`."""
  steps = max(sums["steps"], 1)
  return {"epoch": epoch, "train_loss": sums["loss"] / steps,
          "train_accuracy": sums["accuracy"] / steps}
