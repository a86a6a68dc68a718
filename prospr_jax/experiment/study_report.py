"""A study's report: markdown tables of a sweep's records (`grid_sweep.collect_records`, see
`study_records`) and the plots of `study_plots`, written by `write_report`.

Beside accuracy (mean ± sample std over seeds), the reference method (the declared report
reference) is compared with every other arm seed by seed: with a 95% Student-t interval per
comparison, and corrected for the whole family of comparisons (Holm-Bonferroni verdicts with
Bonferroni intervals, `study_statistics`), at equal nominal density and at matched effective
density, and, over a stated range of densities, its mean advantage (one comparison per arm).
Extra tables: effective density, convergence (arms trained twice as long), sanity
checks, mask-finding time.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from prospr_jax.experiment import study_plots, study_statistics
from prospr_jax.experiment.grid_sweep import DENSE, parse_arm
from prospr_jax.experiment.study_records import (
    STD_DDOF,
    Record,
    Stats,
    check_provenance,
    convergence_base,
    dense_stats,
    group_stats,
    is_convergence_arm,
    is_sanity_arm,
    ordered_methods,
    ordered_sparsities,
    sparsity_label,
)
from prospr_jax.saliency import registry

CONFIDENCE = 0.95
CONVERGENCE_TOLERANCE = 0.3
"""Points an arm may gain from twice the training for its training to count as converged."""
TABLE_FILE = "results_table.md"
ACCURACY_PLOT_FILE = "accuracy_vs_sparsity.png"
DENSITY_PLOT_FILE = "layer_density.png"
EFFECTIVE_PLOT_FILE = "accuracy_vs_effective_density.png"
DIFFERENCES_PLOT_FILE = "differences_to_reference.png"
RANGE_PLOT_FILE = "range_differences.png"


def format_cell(stats: Stats | None, expected_seeds: int, bold: bool = False) -> str:
  """'91.23 ± 0.45', with ' (n=2)' when fewer than `expected_seeds` seeds; '—' if missing."""
  if stats is None:
    return "—"
  text = f"{stats.mean:.2f}" if math.isnan(stats.std) else f"{stats.mean:.2f} ± {stats.std:.2f}"
  if bold:
    text = f"**{text}**"
  if stats.n < expected_seeds:
    text += f" (n={stats.n})"
  return text


def best_methods(stats: dict[tuple[str, float], Stats], methods: Sequence[str],
                 sparsity: float) -> set[str]:
  """The pruning method(s) with the highest mean at `sparsity` (ties all count)."""
  means = {m: stats[(m, sparsity)].mean for m in methods if (m, sparsity) in stats}
  if not means:
    return set()
  best = max(means.values())
  return {m for m, v in means.items() if v == best}


def _markdown_row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"


def results_table(records: Sequence[Record], metric: str = "final_test_top1",
                  expected_seeds: int | None = None) -> str:
  """Markdown table: rows = dense + methods, columns = sparsities, cells mean ± std in %.

  Args:
    records: sweep records.
    metric: record field to tabulate (a fraction; shown in percent).
    expected_seeds: seeds a full cell has; cells with fewer get '(n=k)'. Default: the number
      of distinct seeds in `records`.

  The best pruning method of each column is bold (dense is never bolded); the dense row repeats
  the unpruned accuracy in every column as the reference.
  """
  stats = group_stats(records, metric)
  methods, sparsities = ordered_methods(records), ordered_sparsities(records)
  if expected_seeds is None:
    expected_seeds = len({r["seed"] for r in records})
  lines = [
      f"{metric} (%): mean ± std over seeds (std with ddof={STD_DDOF}, i.e. sample std); "
      f"'(n=k)' marks cells with fewer than {expected_seeds} seed(s). Best pruning method per "
      "sparsity in bold; 'dense' is the unpruned network.",
      "",
      _markdown_row([f"method \\ sparsity (mean ± std, ddof={STD_DDOF})"]
                    + [sparsity_label(s) for s in sparsities]),
      _markdown_row(["---"] + ["---:"] * len(sparsities)),
  ]
  dense = dense_stats(stats)
  if dense is not None:
    lines.append(_markdown_row([DENSE] + [format_cell(dense, expected_seeds)] * len(sparsities)))
  best = {s: best_methods(stats, methods, s) for s in sparsities}
  for m in methods:
    cells = [format_cell(stats.get((m, s)), expected_seeds, bold=m in best[s]) for s in sparsities]
    lines.append(_markdown_row([m] + cells))
  return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Interval:
  """Mean of `n` paired differences and its `CONFIDENCE` Student-t interval (NaN if n < 2)."""

  mean: float
  low: float
  high: float
  n: int


def mean_interval(values: Sequence[float]) -> Interval:
  """Mean of `values` and its two-sided `CONFIDENCE` Student-t interval."""
  low, high = study_statistics.t_interval(values, CONFIDENCE)
  return Interval(float(np.mean(values)), low, high, len(values))


def paired_differences(records: Sequence[Record], reference: str | None = None,
                       metric: str = "final_test_top1", scale: float = 100.0
                       ) -> dict[tuple[str, float], Interval]:
  """`{(arm, sparsity): Interval of scale * (reference - arm)}` over the seeds both have;
  `reference` defaults to the declared report reference (`registry.report_reference()`).

  Runs of one seed share the initialization and the data order across arms, so the
  difference is taken seed by seed (a paired comparison).
  """
  reference = reference or registry.report_reference()
  arms = sorted({r["method"] for r in records} - {reference})
  diffs = study_statistics.paired_differences(records, reference, arms, metric, scale)
  return {key: mean_interval(values) for key, values in sorted(diffs.items())}


def _markdown_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = [title, "", _markdown_row(header), _markdown_row(["---"] + ["---:"] * (len(header) - 1))]
  return "\n".join(lines + [_markdown_row(r) for r in rows]) + "\n"


def format_interval(interval: Interval | None) -> str:
  """'+1.23 [+0.10, +2.36]', or '+1.23 (n=1)' without an interval; '—' if missing."""
  if interval is None:
    return "—"
  if math.isnan(interval.low):
    return f"{interval.mean:+.2f} (n={interval.n})"
  return f"{interval.mean:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def paired_table(records: Sequence[Record], reference: str | None = None) -> str:
  """Markdown table of `reference` (default: `registry.report_reference()`) minus each other
  pruned arm, per sparsity (points)."""
  reference = reference or registry.report_reference()
  diffs = paired_differences(records, reference)
  sparsities = ordered_sparsities(records)
  rows = [[m] + [format_interval(diffs.get((m, s))) for s in sparsities]
          for m in ordered_methods(records) if m != reference and not is_sanity_arm(m)]
  title = (f"{reference} minus each method, final test top-1 in points: mean over seeds paired "
           f"by seed [{CONFIDENCE:.0%} Student-t interval]; an interval above 0 means "
           f"{reference} is better.")
  return _markdown_table(title, ["method"] + [sparsity_label(s) for s in sparsities], rows)


def format_comparison(comparison: study_statistics.Comparison | None) -> str:
  """'+1.23 [+0.10, +2.36] ahead (p=0.012)': mean, corrected interval, verdict, Holm p."""
  if comparison is None:
    return "—"
  if math.isnan(comparison.low):
    return f"{comparison.mean:+.2f} (n={comparison.n})"
  return (f"{comparison.mean:+.2f} [{comparison.low:+.2f}, {comparison.high:+.2f}] "
          f"{comparison.verdict} (p={comparison.holm_p:.2g})")


def _compared_arms(records: Sequence[Record], reference: str) -> list[str]:
  """The pruned arms compared with the reference: every other arm but the sanity checks."""
  return [m for m in ordered_methods(records) if m != reference and not is_sanity_arm(m)]


def reference_comparisons(records: Sequence[Record], matched_effective: bool = False,
                          reference: str | None = None) -> list[study_statistics.Comparison]:
  """The reference minus every other pruned arm (no sanity arms) at every density, as one
  corrected family; at equal nominal density, or at the reference's effective density."""
  reference = reference or registry.report_reference()
  arms = _compared_arms(records, reference)
  differences = (study_statistics.matched_effective_differences if matched_effective
                 else study_statistics.paired_differences)(records, reference, arms)
  return study_statistics.correct_family(differences)


def corrected_table(comparisons: Sequence[study_statistics.Comparison], what: str,
                    row_label: str = "method") -> str:
  """Markdown table of a corrected family: rows = arms, columns = sparsities."""
  cells = {(c.arm, c.sparsity): c for c in comparisons}
  arms = list(dict.fromkeys(c.arm for c in comparisons))
  sparsities = sorted({c.sparsity for c in comparisons})
  rows = [[arm] + [format_comparison(cells.get((arm, s))) for s in sparsities] for arm in arms]
  m = len(comparisons)
  title = (f"{what}, final test top-1 in points: mean over seeds paired by seed "
           f"[{1 - study_statistics.ALPHA / max(m, 1):.2%} Bonferroni interval], and the verdict "
           f"of a Holm-Bonferroni correction over all {m} comparisons of this table "
           f"(family-wise error {study_statistics.ALPHA}) with its adjusted p-value.")
  return _markdown_table(title, [row_label] + [sparsity_label(s) for s in sparsities], rows)


def range_comparisons(records: Sequence[Record], sparsities: Sequence[float],
                      reference: str | None = None) -> list[study_statistics.Comparison]:
  """The reference minus every other pruned arm (no sanity arms), averaged per seed over
  `sparsities`, as one corrected family (`study_statistics.range_mean_differences`).

  Raises:
    ValueError: if a sparsity of `sparsities` has no pruned run.
  """
  missing = sorted(set(map(float, sparsities)) - set(ordered_sparsities(records)))
  if missing:
    raise ValueError(f"No pruned runs at sparsity {missing}; the runs have "
                     f"{ordered_sparsities(records)}.")
  reference = reference or registry.report_reference()
  arms = _compared_arms(records, reference)
  return study_statistics.correct_family(
      study_statistics.range_mean_differences(records, reference, arms, sparsities))


def range_table(comparisons: Sequence[study_statistics.Comparison],
                sparsities: Sequence[float], reference: str | None = None) -> str:
  """Markdown table of `range_comparisons`: one row per arm."""
  reference = reference or registry.report_reference()
  m = len(comparisons)
  title = (f"{reference} minus each method averaged over the densities at sparsity "
           f"{', '.join(sparsity_label(s) for s in sorted(sparsities))} (each seed's "
           f"differences averaged, then compared over the seeds that ran all of them), final "
           f"test top-1 in points: mean [{1 - study_statistics.ALPHA / max(m, 1):.2%} "
           f"Bonferroni interval], and the verdict of a Holm-Bonferroni correction over the "
           f"{m} arm(s) (family-wise error {study_statistics.ALPHA}) with its adjusted p-value.")
  rows = [[c.arm, format_comparison(c), str(c.n)] for c in comparisons]
  return _markdown_table(title, ["method", f"{reference} minus method", "seeds"], rows)


def connectivity_table(records: Sequence[Record]) -> str:
  """Markdown table: mean effective density (%) and mean share of inactive kept weights, and
  the number of runs with a disconnected layer, per pruned arm and sparsity."""
  density = group_stats(records, "effective_density_total")
  inactive = group_stats(records, "inactive_fraction")
  groups: dict[tuple[str, float], list[int]] = defaultdict(list)
  for r in records:
    if r.get("num_disconnected_layers") is not None:
      groups[(r["method"], float(r["sparsity"]))].append(int(r["num_disconnected_layers"] > 0))
  sparsities = ordered_sparsities(records)

  def cell(key):
    if key not in density:
      return "—"
    text = f"{density[key].mean:.2f} / {inactive[key].mean:.0f}%"
    broken = sum(groups.get(key, []))
    return text + (f" / {broken} disc." if broken else "")

  rows = [[m] + [cell((m, s)) for s in sparsities] for m in ordered_methods(records)]
  title = ("Effective density (% of prunable weights on an input-output path) / share of the "
           "kept weights on no such path, mean over seeds; 'k disc.': k runs left a layer "
           "with no effective weight (the network is cut).")
  return _markdown_table(title, ["method"] + [sparsity_label(s) for s in sparsities], rows)


def convergence_table(records: Sequence[Record], expected_seeds: int | None = None) -> str:
  """Markdown table: every convergence arm ('dense+x2', 'prospr+x2', ...) against its base arm
  at the same sparsity: both accuracies (mean ± std over seeds), the gain (convergence arm
  minus base, paired by seed, points, `CONFIDENCE` Student-t interval) and whether the mean
  gain is at most `CONVERGENCE_TOLERANCE` points (the base's training counts as converged)."""
  stats = group_stats(records)
  if expected_seeds is None:
    expected_seeds = len({r["seed"] for r in records})
  rows = []
  for arm in sorted({r["method"] for r in records if is_convergence_arm(r["method"])}):
    base = convergence_base(arm)
    gains = study_statistics.paired_differences(records, arm, [base])  # arm minus base
    for sparsity in sorted({float(r["sparsity"]) for r in records if r["method"] == arm}):
      gain = mean_interval(gains[(base, sparsity)]) if (base, sparsity) in gains else None
      verdict = "—" if gain is None else (
          "yes" if gain.mean <= CONVERGENCE_TOLERANCE else "**no**")
      rows.append([base, sparsity_label(sparsity),
                   format_cell(stats.get((base, sparsity)), expected_seeds),
                   format_cell(stats.get((arm, sparsity)), expected_seeds),
                   format_interval(gain), verdict])
  title = (f"Convergence: each arm trained twice as long ('+x2') against the same arm, final "
           f"test top-1 (%), and the gain in points (paired by seed, [{CONFIDENCE:.0%} "
           f"Student-t interval]); converged: a mean gain of at most "
           f"{CONVERGENCE_TOLERANCE} point.")
  return _markdown_table(
      title, ["arm", "sparsity", "as trained", "trained twice as long", "gain", "converged"],
      rows)


def prune_time_table(records: Sequence[Record]) -> str:
  """Markdown table of the median mask-finding wall time (s) per pruned arm and sparsity."""
  times = defaultdict(list)
  for r in records:
    if r.get("prune_seconds") is not None and float(r["sparsity"]) > 0:
      times[r["method"]].append(float(r["prune_seconds"]))
  rows = [[m, f"{np.median(times[m]):.1f}", f"{min(times[m]):.1f}", f"{max(times[m]):.1f}",
           str(len(times[m]))] for m in ordered_methods(records) if m in times]
  title = "Mask-finding wall time per run (s; data loading and compilation included)."
  return _markdown_table(title, ["method", "median", "min", "max", "runs"], rows)


def _sanity_arms(records: Sequence[Record]) -> tuple[dict[str, list[str]], list[float]]:
  """`({base method: its sanity-check arms}, the sparsities those arms ran at)`."""
  sanity_arms = sorted({r["method"] for r in records if is_sanity_arm(r["method"])})
  bases: dict[str, list[str]] = defaultdict(list)
  for arm in sanity_arms:
    bases[parse_arm(arm)[0]].append(arm)
  sparsities = sorted({float(r["sparsity"]) for r in records if r["method"] in sanity_arms})
  return dict(bases), sparsities


def sanity_table(records: Sequence[Record], metric: str = "final_test_top1") -> str:
  """Markdown table: each method with sanity-check arms beside its own, per sparsity."""
  bases, sparsities = _sanity_arms(records)
  stats = group_stats(records, metric)
  seeds = len({r["seed"] for r in records})
  rows = [[arm] + [format_cell(stats.get((arm, s)), seeds) for s in sparsities]
          for base, arms in bases.items() for arm in [base, *arms]]
  title = ("Sanity checks (Frankle et al. 2021), final test top-1 (%): +shuffle permutes the "
           "kept positions within each layer, +reinit trains the mask from a new "
           "initialization, +invert keeps each layer's lowest-scored weights.")
  return _markdown_table(title, ["arm"] + [sparsity_label(s) for s in sparsities], rows)


def sanity_differences_table(records: Sequence[Record]) -> str:
  """Markdown table: each method minus each of its sanity-check arms, final test top-1 in
  points, paired by seed with a Student-t interval, per sparsity."""
  bases, sparsities = _sanity_arms(records)
  rows = []
  for base, arms in bases.items():
    diffs = paired_differences(records, reference=base)
    rows += [[f"{base} − {arm}"] + [format_interval(diffs.get((arm, s))) for s in sparsities]
             for arm in arms]
  title = (f"Each method minus its sanity-check arms, final test top-1 in points: mean over "
           f"seeds paired by seed [{CONFIDENCE:.0%} Student-t interval]; an interval above 0 "
           f"means the check hurts, i.e. the method's mask carries information that the check "
           f"destroys.")
  return _markdown_table(title, ["difference"] + [sparsity_label(s) for s in sparsities], rows)


def sanity_comparisons(records: Sequence[Record]) -> list[study_statistics.Comparison]:
  """Each method minus each of its sanity-check arms at every density, one corrected family;
  the arm of a comparison is named 'method − arm'."""
  bases, _ = _sanity_arms(records)
  differences = {}
  for base, arms in bases.items():
    for (arm, sparsity), diffs in study_statistics.paired_differences(
        records, base, arms).items():
      differences[(f"{base} − {arm}", sparsity)] = diffs
  return study_statistics.correct_family(differences)


def write_report(records: Sequence[Record], output_dir: str,
                 density_sparsity: float | None = None,
                 expected_seeds: int | None = None,
                 allow_mixed_commits: bool = False,
                 average_sparsities: Sequence[float] | None = None) -> list[str]:
  """Writes `results_table.md` and the plots (`ACCURACY_PLOT_FILE` and, where the records
  allow, `EFFECTIVE_PLOT_FILE`, `DIFFERENCES_PLOT_FILE`, `RANGE_PLOT_FILE` and
  `DENSITY_PLOT_FILE`).

  The markdown file holds the accuracy table of the pruned arms (sanity-check and convergence
  arms left out) and, where the records have them: the paired differences against the declared
  report reference (`registry.report_reference()`), uncorrected and corrected for the family,
  at equal nominal and at matched effective density, and averaged over `average_sparsities`
  (when given); the effective density; the convergence
  check (every '+x2' arm against its base arm); the sanity checks (and each method minus its
  sanity arms, uncorrected and corrected); the mask-finding times. Refuses records from several
  commits unless `allow_mixed_commits` (see `check_provenance`). Returns the paths written.
  """
  commits = check_provenance(records, allow_mixed_commits)
  main = [r for r in records
          if not (is_sanity_arm(r["method"]) or is_convergence_arm(r["method"]))]
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, f) for f in (TABLE_FILE, ACCURACY_PLOT_FILE)]
  code = ", ".join("not recorded" if c is None else str(c) for c in commits)
  sections = [f"Runs: {len(records)}; code: {code}.\n",
              results_table(main, expected_seeds=expected_seeds)]
  pruned = {r["method"] for r in main if float(r["sparsity"]) > 0}
  reference = registry.report_reference()
  compared = reference in pruned and len(pruned) > 1
  effective = any(r.get("effective_density_total") is not None for r in main)
  if compared:
    comparisons = reference_comparisons(main)
    ranged = range_comparisons(main, average_sparsities) if average_sparsities else []
    if ranged:
      sections.append(range_table(ranged, average_sparsities))
    sections += [paired_table(main), corrected_table(
        comparisons, f"{reference} minus each method at equal density (corrected)")]
    if effective:
      sections.append(corrected_table(
          reference_comparisons(main, matched_effective=True),
          f"{reference} minus each method at {reference}'s effective density (each method's "
          "accuracy interpolated linearly in log effective density between its two nearest "
          "runs of the same seed; no extrapolation)"))
  if effective:
    sections.append(connectivity_table(main))
  if any(is_convergence_arm(r["method"]) for r in records):
    sections.append(convergence_table(
        [r for r in records if not is_sanity_arm(r["method"])], expected_seeds))
  if any(is_sanity_arm(r["method"]) for r in records):
    sections += [sanity_table(records), sanity_differences_table(records),
                 corrected_table(sanity_comparisons(records),
                                 "Each method minus its sanity-check arms (corrected)",
                                 row_label="difference")]
  if any(r.get("prune_seconds") is not None for r in main):
    sections.append(prune_time_table(main))
  with open(paths[0], "w") as f:
    f.write("\n".join(sections))
  study_plots.plot_accuracy_vs_sparsity(main, paths[1])
  if effective:
    paths.append(os.path.join(output_dir, EFFECTIVE_PLOT_FILE))
    study_plots.plot_accuracy_vs_effective_density(main, paths[-1])
  if compared:
    paths.append(os.path.join(output_dir, DIFFERENCES_PLOT_FILE))
    study_plots.plot_paired_differences(comparisons, reference, paths[-1])
    if ranged:
      paths.append(os.path.join(output_dir, RANGE_PLOT_FILE))
      study_plots.plot_range_differences(ranged, reference, average_sparsities, paths[-1])
  if any(r.get("layer_density") for r in main if float(r["sparsity"]) > 0):
    paths.append(os.path.join(output_dir, DENSITY_PLOT_FILE))
    study_plots.plot_layer_density(main, paths[-1], density_sparsity)
  return paths
