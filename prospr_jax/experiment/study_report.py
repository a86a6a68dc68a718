"""Tables and plots of a sweep's results (records from
`prospr_jax.experiment.grid_sweep.collect_records`).

Each record is a dict with at least `method` (the sweep arm, e.g. 'snip' or 'prospr+shuffle'),
`sparsity` (0.0 for dense arms), `seed`, `final_test_top1` (a fraction) and, for the
layer-density plot, `layer_density` (`{param path: density}`); `git_commit`, `git_dirty`,
`effective_density_total`, `inactive_fraction`, `num_disconnected_layers` and `prune_seconds`
feed the provenance check and the extra tables. Accuracies are reported in percent; spreads are
the sample standard deviation over seeds (`STD_DDOF = 1`); paired differences come with a 95%
Student-t interval over seeds.

Plots are drawn on Agg canvases (no display, no pyplot state).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prospr_jax.experiment.grid_sweep import DENSE, parse_arm
from prospr_jax.saliency import registry

Record = dict[str, Any]
STD_DDOF = 1
"""Delta degrees of freedom of the reported std over seeds (1: sample standard deviation)."""
SANITY_MODIFIERS = ("shuffle", "reinit", "invert")
CONFIDENCE = 0.95
TABLE_FILE = "results_table.md"
ACCURACY_PLOT_FILE = "accuracy_vs_sparsity.png"
DENSITY_PLOT_FILE = "layer_density.png"


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


def _method_colors(methods: Sequence[str]) -> dict[str, Any]:
  """A fixed color per method (tab10 order), so both plots agree."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  cmap = colormaps["tab10"]
  return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _new_figure(width: float, height: float) -> tuple[Figure, Any]:
  """A figure on an Agg canvas and its single axes."""
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def _nan_to_zero(x: float) -> float:
  return 0.0 if math.isnan(x) else x


def plot_accuracy_vs_sparsity(records: Sequence[Record], path: str,
                              metric: str = "final_test_top1") -> None:
  """Accuracy vs remaining-weight fraction (log x, inverted: sparsity grows to the right).

  One line per method with ± std error bars and band; dense as a dashed horizontal line.
  """
  stats = group_stats(records, metric)
  methods, sparsities = ordered_methods(records), ordered_sparsities(records)
  colors = _method_colors(methods)
  fig, ax = _new_figure(7.0, 4.5)
  ax.set_xscale("log")
  if sparsities:  # fixed before plotting: no autoscaling of a single sparsity
    remaining = [1.0 - s for s in sparsities]
    ax.set_xlim(max(remaining) * 1.25, min(remaining) / 1.25)  # inverted: sparser to the right
    ax.set_xticks(remaining, [sparsity_label(s) for s in sparsities])
    ax.minorticks_off()
  for m in methods:
    points = [(1.0 - s, stats[(m, s)]) for s in sparsities if (m, s) in stats]
    x = np.array([p[0] for p in points])
    mean = np.array([p[1].mean for p in points])
    std = np.array([_nan_to_zero(p[1].std) for p in points])
    ax.errorbar(x, mean, yerr=std, marker="o", ms=4, capsize=3, color=colors[m], label=m)
    if len(x) > 1:  # a band needs two sparsities; the error bars show a single one
      ax.fill_between(x, mean - std, mean + std, color=colors[m], alpha=0.15, lw=0)
  dense = dense_stats(stats)
  if dense is not None:
    ax.axhline(dense.mean, color="black", ls="--", lw=1.2, label=DENSE)
    spread = _nan_to_zero(dense.std)
    ax.axhspan(dense.mean - spread, dense.mean + spread, color="black", alpha=0.08, lw=0)
  ax.set_xlabel("sparsity (log scale of remaining weights)")
  ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small", ncols=2)
  fig.savefig(path, dpi=120)


def layer_densities(records: Sequence[Record], sparsity: float
                    ) -> tuple[list[str], dict[str, np.ndarray]]:
  """Layer names (in the order recorded) and each method's mean per-layer density at `sparsity`.

  Raises:
    ValueError: if no pruned run at `sparsity` has per-layer densities.
  """
  chosen = [r for r in records if float(r["sparsity"]) > 0 and r.get("layer_density")
            and math.isclose(float(r["sparsity"]), sparsity)]
  if not chosen:
    raise ValueError(f"No per-layer densities at sparsity {sparsity}; the records have "
                     f"sparsities {ordered_sparsities(records)}.")
  layers = list(dict.fromkeys(name for r in chosen for name in r["layer_density"]))
  per_method: dict[str, list[list[float]]] = defaultdict(list)
  for r in chosen:
    per_method[r["method"]].append([r["layer_density"].get(n, math.nan) for n in layers])
  methods = [m for m in ordered_methods(chosen) if m in per_method]
  return layers, {m: np.nanmean(np.array(per_method[m]), axis=0) for m in methods}


def plot_layer_density(records: Sequence[Record], path: str,
                       sparsity: float | None = None) -> None:
  """Grouped bars (log y) of each method's per-layer density at `sparsity` (default: highest).

  A dotted line marks the overall density 1 - sparsity.
  """
  if sparsity is None:
    sparsities = ordered_sparsities(records)
    if not sparsities:
      raise ValueError("No pruned runs in the records.")
    sparsity = sparsities[-1]
  layers, densities = layer_densities(records, sparsity)
  colors = _method_colors(ordered_methods(records))
  fig, ax = _new_figure(min(20.0, max(6.0, 1.5 + 0.2 * len(layers) * len(densities))), 4.5)
  index = np.arange(len(layers))
  width = 0.8 / len(densities)
  for i, (m, d) in enumerate(densities.items()):
    ax.bar(index + (i - (len(densities) - 1) / 2) * width, d, width, color=colors[m], label=m)
  ax.axhline(1.0 - sparsity, color="black", ls=":", lw=1.2, label="overall density")
  ax.set_yscale("log")
  ax.set_xticks(index, layers, rotation=45, ha="right", fontsize="small")
  ax.set_xlabel("layer")
  ax.set_ylabel("fraction of weights kept")
  ax.set_title(f"Per-layer density at {sparsity_label(sparsity)} sparsity")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize="small", ncols=2)
  fig.savefig(path, dpi=120)


@dataclasses.dataclass(frozen=True)
class Interval:
  """Mean of `n` paired differences and its `CONFIDENCE` Student-t interval (NaN if n < 2)."""

  mean: float
  low: float
  high: float
  n: int


def mean_interval(values: Sequence[float]) -> Interval:
  """Mean of `values` and its two-sided `CONFIDENCE` Student-t interval."""
  x = np.asarray(values, dtype=np.float64)
  mean = float(np.mean(x))
  if x.size < 2:
    return Interval(mean, math.nan, math.nan, int(x.size))
  half = scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * np.std(x, ddof=1) / math.sqrt(x.size)
  return Interval(mean, mean - half, mean + half, int(x.size))


def paired_differences(records: Sequence[Record], reference: str | None = None,
                       metric: str = "final_test_top1", scale: float = 100.0
                       ) -> dict[tuple[str, float], Interval]:
  """`{(arm, sparsity): Interval of scale * (reference - arm)}` over the seeds both have;
  `reference` defaults to the declared report reference (`registry.report_reference()`).

  Runs of one seed share the initialization and the data order across arms, so the
  difference is taken seed by seed (a paired comparison).
  """
  reference = reference or registry.report_reference()
  value = {(r["method"], float(r["sparsity"]), r["seed"]): scale * float(r[metric])
           for r in records if r.get(metric) is not None}
  out = {}
  pairs = {(a, s) for a, s, _ in value} - {(reference, s) for _, s, _ in value}
  for arm, sparsity in sorted(pairs):
    seeds = sorted(seed for (a, s, seed) in value if a == arm and s == sparsity
                   and (reference, s, seed) in value)
    if seeds:
      out[(arm, sparsity)] = mean_interval(
          [value[(reference, sparsity, seed)] - value[(arm, sparsity, seed)] for seed in seeds])
  return out


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


def convergence_table(records: Sequence[Record]) -> str:
  """Markdown table of every dense arm ('dense', 'dense+x2', ...) per seed and on average."""
  dense = sorted({r["method"] for r in records if float(r["sparsity"]) == 0.0})
  seeds = sorted({r["seed"] for r in records if r["method"] in dense})
  value = {(r["method"], r["seed"]): 100 * float(r["final_test_top1"]) for r in records
           if r["method"] in dense}
  rows = [[arm] + [f"{value[(arm, s)]:.2f}" if (arm, s) in value else "—" for s in seeds]
          + [format_cell(summarize([value[(arm, s)] for s in seeds if (arm, s) in value]),
                         len(seeds))] for arm in dense]
  title = "Dense networks, final test top-1 (%) per seed: is the training budget converged?"
  return _markdown_table(title, ["arm"] + [f"seed {s}" for s in seeds] + ["mean ± std"], rows)


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


def write_report(records: Sequence[Record], output_dir: str,
                 density_sparsity: float | None = None,
                 expected_seeds: int | None = None,
                 allow_mixed_commits: bool = False) -> list[str]:
  """Writes `results_table.md`, `accuracy_vs_sparsity.png` and `layer_density.png`.

  The markdown file holds the accuracy table of the pruned arms (sanity-check arms left out)
  and, where the records have them, the paired differences against the declared report
  reference (`registry.report_reference()`), the effective density, the dense convergence
  check, the sanity checks (and each method minus its sanity arms, paired by seed) and the
  mask-finding times. The density plot is left out (with no
  error) when no record has per-layer densities. Refuses records from several commits unless
  `allow_mixed_commits` (see `check_provenance`). Returns the paths written.
  """
  commits = check_provenance(records, allow_mixed_commits)
  main = [r for r in records if not is_sanity_arm(r["method"])]
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, f) for f in (TABLE_FILE, ACCURACY_PLOT_FILE)]
  sections = [f"Runs: {len(records)}; code: {', '.join(str(c) for c in commits)}.\n",
              results_table(main, expected_seeds=expected_seeds)]
  pruned = {r["method"] for r in main if float(r["sparsity"]) > 0}
  if registry.report_reference() in pruned and len(pruned) > 1:
    sections.append(paired_table(main))
  if any(r.get("effective_density_total") is not None for r in main):
    sections.append(connectivity_table(main))
  if len({r["method"] for r in main if float(r["sparsity"]) == 0.0}) > 1:
    sections.append(convergence_table(main))
  if any(is_sanity_arm(r["method"]) for r in records):
    sections += [sanity_table(records), sanity_differences_table(records)]
  if any(r.get("prune_seconds") is not None for r in main):
    sections.append(prune_time_table(main))
  with open(paths[0], "w") as f:
    f.write("\n".join(sections))
  plot_accuracy_vs_sparsity(main, paths[1])
  if any(r.get("layer_density") for r in main if float(r["sparsity"]) > 0):
    paths.append(os.path.join(output_dir, DENSITY_PLOT_FILE))
    plot_layer_density(main, paths[-1], density_sparsity)
  return paths
