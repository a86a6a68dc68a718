"""Tables and plots of a sweep's results (records from `prospr_jax.sweep.collect_records`).

Each record is a dict with at least `method`, `sparsity` (0.0 for dense), `seed`,
`final_test_top1` (a fraction) and, for the layer-density plot, `layer_density`
(`{param path: density}`). Accuracies are reported in percent; spreads are the sample standard
deviation over seeds (`STD_DDOF = 1`).

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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prospr_jax.sweep import DEFAULT_METHODS, DENSE

Record = dict[str, Any]
STD_DDOF = 1
"""Delta degrees of freedom of the reported std over seeds (1: sample standard deviation)."""
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


def ordered_methods(records: Sequence[Record]) -> list[str]:
  """Pruning methods present (not dense): `DEFAULT_METHODS` order first, then alphabetical."""
  present = {r["method"] for r in records} - {DENSE}
  known = [m for m in DEFAULT_METHODS if m in present]
  return known + sorted(present - set(known))


def ordered_sparsities(records: Sequence[Record]) -> list[float]:
  """Sparsities of the pruned runs, ascending."""
  return sorted({float(r["sparsity"]) for r in records if r["method"] != DENSE})


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
  chosen = [r for r in records if r["method"] != DENSE and r.get("layer_density")
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


def write_report(records: Sequence[Record], output_dir: str,
                 density_sparsity: float | None = None,
                 expected_seeds: int | None = None) -> list[str]:
  """Writes `results_table.md`, `accuracy_vs_sparsity.png` and `layer_density.png`.

  The density plot is left out (with no error) when no record has per-layer densities.
  Returns the paths written.
  """
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, f) for f in (TABLE_FILE, ACCURACY_PLOT_FILE)]
  with open(paths[0], "w") as f:
    f.write(results_table(records, expected_seeds=expected_seeds))
  plot_accuracy_vs_sparsity(records, paths[1])
  if any(r.get("layer_density") for r in records if r["method"] != DENSE):
    paths.append(os.path.join(output_dir, DENSITY_PLOT_FILE))
    plot_layer_density(records, paths[-1], density_sparsity)
  return paths
