"""A study's records and what every table and plot computes from them.

Each record is a dict with at least `method` (the sweep arm, e.g. 'snip' or 'prospr+shuffle'),
`sparsity` (0.0 for dense arms), `seed` and `final_test_top1` (a fraction); see
`grid_sweep.record_from_results` for the other fields. Accuracies are reported in percent;
spreads are the sample standard deviation over seeds (`STD_DDOF = 1`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from prospr_jax.experiment.grid_sweep import DENSE, TRAINING_LENGTH_MODIFIERS, parse_arm
from prospr_jax.saliency import registry

Record = dict[str, Any]
STD_DDOF = 1
"""Delta degrees of freedom of the reported std over seeds (1: sample standard deviation)."""
SANITY_MODIFIERS = ("shuffle", "reinit", "invert")
@dataclasses.dataclass(frozen=True)
class Stats:
  """Mean and std (ddof=`STD_DDOF`, NaN for a single value) of `n` values."""

  mean: float
  std: float
  n: int


def summarize(values: Sequence[float]) -> Stats:
  """Mean, std with `STD_DDOF` and count of `values` (std is NaN when there is only one)."""
  x = np.asarray(values, dtype=np.float64)
  std = float(np.std(x, ddof=STD_DDOF)) if x.size > STD_DDOF else math.nan
  return Stats(float(np.mean(x)), std, int(x.size))


def group_stats(records: Sequence[Record], metric: str = "final_test_top1",
                scale: float = 100.0) -> dict[tuple[str, float], Stats]:
  """`{(method, sparsity): Stats of scale * record[metric] over seeds}` (dense at sparsity 0)."""
  groups: dict[tuple[str, float], list[float]] = defaultdict(list)
  for r in records:
    if r.get(metric) is not None:
      groups[(r["method"], float(r["sparsity"]))].append(scale * float(r[metric]))
  return {key: summarize(values) for key, values in groups.items()}


def is_sanity_arm(arm: str) -> bool:
  """Whether a sweep arm is a sanity check ('prospr+shuffle', ...)."""
  return any(m in SANITY_MODIFIERS for m in parse_arm(arm)[1])


def is_convergence_arm(arm: str) -> bool:
  """Whether a sweep arm trains its base arm longer ('dense+x2', 'prospr+x2', ...)."""
  return any(m in TRAINING_LENGTH_MODIFIERS for m in parse_arm(arm)[1])


def _without_modifiers(arm: str, dropped: Sequence[str]) -> str:
  """`arm` with the modifiers in `dropped` removed."""
  method, modifiers = parse_arm(arm)
  return "+".join([method] + [m for m in modifiers if m not in dropped])


def convergence_base(arm: str) -> str:
  """The arm a convergence arm trains longer: 'prospr+erk+x2' -> 'prospr+erk'."""
  return _without_modifiers(arm, TRAINING_LENGTH_MODIFIERS)


def base_arm(arm: str) -> str:
  """The arm with its sanity-check and training-length modifiers removed: 'prospr+shuffle' ->
  'prospr', 'dense+x2' -> 'dense', 'random+erk' -> 'random+erk'."""
  return _without_modifiers(arm, SANITY_MODIFIERS + TRAINING_LENGTH_MODIFIERS)


def select_arms(records: Sequence[Record], arms: Sequence[str]) -> list[Record]:
  """The records of `arms`, of their sanity-check and convergence arms, and of the dense arms.

  A report of a pre-specified set of arms is one corrected family, whatever other arms the
  study's directory holds.

  Raises:
    ValueError: if an arm of `arms` has no record (a misspelled arm would otherwise shrink the
      family silently).
  """
  present = {base_arm(r["method"]) for r in records}
  missing = sorted(set(arms) - present)
  if missing:
    raise ValueError(f"No records of the arm(s) {missing}; the records have {sorted(present)}.")
  wanted = set(arms) | {DENSE}
  return [r for r in records if base_arm(r["method"]) in wanted]


def ordered_methods(records: Sequence[Record]) -> list[str]:
  """Pruned arms present (sparsity > 0), the row order of the tables: arms of registered
  methods in declaration order (`registry.METHODS`; each method's plain arm, then its arms
  with modifiers alphabetically), then the other arms alphabetically."""
  present = {r["method"] for r in records if float(r["sparsity"]) > 0}
  rank = {name: i for i, name in enumerate(registry.METHODS)}
  known = sorted((arm for arm in present if parse_arm(arm)[0] in rank),
                 key=lambda arm: (rank[parse_arm(arm)[0]], parse_arm(arm)[1], arm))
  return known + sorted(present - set(known))


def check_provenance(records: Sequence[Record], allow_mixed: bool = False) -> list[str]:
  """The distinct git commits of `records` (None for records that have none), sorted.

  Raises:
    ValueError: unless `allow_mixed`, if the records come from more than one commit, from an
      unknown commit, or from a tree with uncommitted changes: such a table cannot be
      reproduced from one version of the code.
  """
  commits = sorted({r.get("git_commit") for r in records}, key=str)
  dirty = sorted({r["workdir"] for r in records if r.get("git_dirty")})
  if not allow_mixed and (len(commits) > 1 or None in commits or dirty):
    per_commit = defaultdict(set)
    for r in records:
      per_commit[r.get("git_commit")].add(r["method"])
    details = "; ".join(f"{str(c)[:12]}: {sorted(m)}" for c, m in per_commit.items())
    raise ValueError(
        f"The results come from {len(commits)} commit(s) ({details})"
        + (f" and {len(dirty)} run(s) from a modified tree" if dirty else "")
        + ". Rerun them on one commit, or allow mixing explicitly (--allow_mixed_commits)."
    )
  return commits


def ordered_sparsities(records: Sequence[Record]) -> list[float]:
  """Sparsities of the pruned runs, ascending."""
  return sorted({float(r["sparsity"]) for r in records if float(r["sparsity"]) > 0})


def sparsity_label(sparsity: float) -> str:
  """0.995 -> '99.5%'."""
  return f"{round(100 * sparsity, 6):g}%"


def dense_stats(stats: dict[tuple[str, float], Stats]) -> Stats | None:
  """The dense baseline's stats, if the records have dense runs."""
  return stats.get((DENSE, 0.0))
