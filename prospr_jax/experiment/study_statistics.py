"""Corrected comparisons for a study's report: paired differences with Holm-Bonferroni control
across the whole family, and comparisons at matched *effective* density.

A study compares one reference method (the declared report reference, ProsPr) with every other
arm at every density: a family of m paired comparisons. Reading each at 95% finds about one in
twenty "differences" by chance, so a claim must survive a family-wise correction:

* each comparison's two-sided paired t-test p-value (differences seed by seed) is adjusted by
  Holm's step-down procedure (sort ascending, `p_(i) * (m - i + 1)`, running maximum, capped at
  1), which keeps the family-wise error rate at `ALPHA` and is uniformly more powerful than
  Bonferroni;
* its interval is the Bonferroni-corrected one (confidence `1 - ALPHA / m`): it excludes 0
  only where Holm also rejects (Holm, the more powerful, may reject a few more);
* the verdict is 'ahead' (the reference is better), 'behind', or 'indistinguishable'.

Matched effective density: at extreme sparsity some kept weights lie on no input-output path, so
two methods at the same nominal density can differ in the weights that can matter. For each seed
and each of the reference's runs, the other arm's accuracy is interpolated at the reference's
effective density, linearly in log(effective density) between that arm's two nearest runs of the
same seed (no extrapolation: outside the arm's range there is no comparison), and the paired
differences are corrected as above.

Averaged over a range of densities: with few seeds a family of one comparison per arm and
density has little power (3 seeds and 28 comparisons put the first Holm step at |t| > 23.6 on 2
degrees of freedom). One comparison per arm of the reference's mean advantage over a stated
range of densities asks the paper's question ("better at high sparsity?") directly: each seed's
differences are averaged over the range, so the seed stays the independent unit whatever the
correlation between densities, and the family is one comparison per arm.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from prospr_jax.experiment.study_records import Record

ALPHA = 0.05
"""Family-wise error rate of the corrected comparisons."""
VERDICTS = ("ahead", "behind", "indistinguishable")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The reference minus one arm at one density (`sparsity`; None: averaged over a range of
  densities), over `n` seeds (points of accuracy).

  `low`/`high` bound the Bonferroni-corrected interval (NaN for n < 2); `p_value` is the paired
  t-test's, `holm_p` its Holm-adjusted value over the family (1.0 when undefined).
  """

  arm: str
  sparsity: float | None
  mean: float
  low: float
  high: float
  n: int
  p_value: float
  holm_p: float

  @property
  def verdict(self) -> str:
    """'ahead' / 'behind' (the reference is better / worse, family-wise at `ALPHA`) or
    'indistinguishable'."""
    if self.holm_p < ALPHA:
      return "ahead" if self.mean > 0 else "behind"
    return "indistinguishable"


def paired_p_value(differences: Sequence[float]) -> float:
  """Two-sided one-sample t-test p-value of mean 0; 1.0 for fewer than 2 values or no spread
  and mean 0, 0.0 for no spread and a non-zero mean."""
  x = np.asarray(differences, np.float64)
  if x.size < 2:
    return 1.0
  if np.std(x) == 0:
    return 1.0 if np.mean(x) == 0 else 0.0
  return float(scipy.stats.ttest_1samp(x, 0.0).pvalue)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values, in the order given."""
  m = len(p_values)
  order = np.argsort(p_values, kind="stable")
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))
    adjusted[i] = running
  return adjusted.tolist()


def t_interval(differences: Sequence[float], confidence: float) -> tuple[float, float]:
  """Two-sided Student-t interval of the mean at `confidence` (NaN, NaN for n < 2)."""
  x = np.asarray(differences, np.float64)
  if x.size < 2:
    return math.nan, math.nan
  half = (scipy.stats.t.ppf(0.5 + confidence / 2, x.size - 1) * np.std(x, ddof=1)
          / math.sqrt(x.size))
  return float(x.mean() - half), float(x.mean() + half)


def correct_family(differences: dict[tuple[str, float | None], list[float]]
                   ) -> list[Comparison]:
  """`Comparison`s of a family `{(arm, sparsity): paired differences}`, Holm-adjusted over all
  of it, in the order given."""
  keys = list(differences)
  p_values = [paired_p_value(differences[k]) for k in keys]
  confidence = 1 - ALPHA / max(len(keys), 1)
  out = []
  for (arm, sparsity), p, holm in zip(keys, p_values, holm_adjust(p_values)):
    d = differences[(arm, sparsity)]
    low, high = t_interval(d, confidence)
    out.append(Comparison(arm, sparsity, float(np.mean(d)), low, high, len(d), p, holm))
  return out


def _by_run(records: Sequence[Record], metric: str, scale: float
            ) -> dict[tuple[str, float, Any], float]:
  return {(r["method"], float(r["sparsity"]), r["seed"]): scale * float(r[metric])
          for r in records if r.get(metric) is not None}


def paired_differences(records: Sequence[Record], reference: str, arms: Sequence[str],
                       metric: str = "final_test_top1", scale: float = 100.0
                       ) -> dict[tuple[str, float], list[float]]:
  """`{(arm, sparsity): [reference - arm per seed both ran]}` for each arm in `arms`."""
  value = _by_run(records, metric, scale)
  out: dict[tuple[str, float], list[float]] = {}
  for arm in arms:
    for sparsity in sorted({s for a, s, _ in value if a == arm}):
      diffs = [value[(reference, sparsity, seed)] - v for (a, s, seed), v in value.items()
               if a == arm and s == sparsity and (reference, sparsity, seed) in value]
      if diffs:
        out[(arm, sparsity)] = diffs
  return out


def range_mean_differences(records: Sequence[Record], reference: str, arms: Sequence[str],
                           sparsities: Sequence[float], metric: str = "final_test_top1",
                           scale: float = 100.0) -> dict[tuple[str, None], list[float]]:
  """`{(arm, None): [mean over `sparsities` of (reference - arm), per seed]}`, over the seeds
  where both ran at every one of `sparsities`; arms with no such seed are left out."""
  value = _by_run(records, metric, scale)
  sparsities = [float(s) for s in sparsities]
  seeds = sorted({seed for _, _, seed in value}, key=str)
  out: dict[tuple[str, None], list[float]] = {}
  for arm in arms:
    means = [float(np.mean([value[(reference, s, seed)] - value[(arm, s, seed)]
                            for s in sparsities]))
             for seed in seeds
             if all((m, s, seed) in value for m in (reference, arm) for s in sparsities)]
    if means:
      out[(arm, None)] = means
  return out


def interpolate_log(x: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
  """`y` at `x`, linear in `log(x)` between the two nearest of `xs` (all > 0); None outside
  `[min(xs), max(xs)]` (no extrapolation)."""
  order = np.argsort(xs)
  lx, y = np.log(np.asarray(xs, np.float64)[order]), np.asarray(ys, np.float64)[order]
  if x <= 0 or not lx[0] <= math.log(x) <= lx[-1]:
    return None
  return float(np.interp(math.log(x), lx, y))


def matched_effective_differences(
    records: Sequence[Record], reference: str, arms: Sequence[str],
    metric: str = "final_test_top1", scale: float = 100.0,
) -> dict[tuple[str, float], list[float]]:
  """`{(arm, reference's nominal sparsity): [reference - arm interpolated at the reference's
  effective density, per seed]}` (module docstring)."""
  points: dict[tuple[str, Any], list[tuple[float, float, float]]] = defaultdict(list)
  for r in records:
    if r.get(metric) is not None and r.get("effective_density_total") and float(r["sparsity"]):
      points[(r["method"], r["seed"])].append(
          (float(r["sparsity"]), float(r["effective_density_total"]), scale * float(r[metric])))
  out: dict[tuple[str, float], list[float]] = defaultdict(list)
  for arm in arms:
    for (method, seed), ref_points in points.items():
      if method != reference or (arm, seed) not in points:
        continue
      _, arm_eff, arm_acc = zip(*points[(arm, seed)])
      for sparsity, eff, acc in ref_points:
        matched = interpolate_log(eff, arm_eff, arm_acc) if len(arm_eff) > 1 else None
        if matched is not None:
          out[(arm, sparsity)].append(acc - matched)
  return dict(out)
