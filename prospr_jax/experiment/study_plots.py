"""Plots of a study's records: accuracy against density and against effective density (with
collapsed runs marked, not squeezing the rest), per-layer densities, and the paired
differences to the reference with their family-wise corrected intervals, per density and
averaged over a range (differences of a collapse marked at the edge, not squeezing the rest).

Drawn on Agg canvases (no display, no pyplot state).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from prospr_jax.experiment.grid_sweep import DENSE
from prospr_jax.experiment.study_records import (
    Record,
    dense_stats,
    group_stats,
    ordered_methods,
    ordered_sparsities,
    sparsity_label,
)
from prospr_jax.experiment.study_statistics import Comparison


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


def _sparsity_axis(ax: Any, sparsities: Sequence[float]) -> None:
  """Log x axis of the remaining-weight fraction, inverted (sparser to the right), one slanted
  tick label per sparsity (neighbours on a 0.8^k grid sit close on this scale); fixed before
  plotting, so a single sparsity is not autoscaled."""
  ax.set_xscale("log")
  if sparsities:
    remaining = [1.0 - s for s in sparsities]
    ax.set_xlim(max(remaining) * 1.25, min(remaining) / 1.25)
    ax.set_xticks(remaining, [sparsity_label(s) for s in sparsities], rotation=30, ha="right")
    ax.minorticks_off()


def _finish(fig: Figure, ax: Any, path: str, xlabel: str, ylabel: str) -> None:
  """Labels, grid and legend of a line plot, saved to `path`."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small", ncols=2)
  fig.savefig(path, dpi=120)


def collapsed(record: Record) -> bool:
  """Whether a pruned run's network is cut: a layer kept no weight on an input-output path."""
  return float(record["sparsity"]) > 0 and bool(record.get("num_disconnected_layers"))


def _informative_ylim(ax: Any, values: Sequence[float]) -> None:
  """Y range of `values` (the runs that are not collapsed) with a 10% margin."""
  if values:
    low, high = min(values), max(values)
    margin = 0.1 * (high - low) or 1.0
    ax.set_ylim(low - margin, high + margin)


def _mark_collapsed(ax: Any, records: Sequence[Record], x_of: Any, metric: str,
                    colors: dict[str, Any]) -> None:
  """An 'x' at the bottom of the axes for each collapsed run, at its x, in its method's color."""
  bottom = ax.get_ylim()[0]
  for r in records:
    if collapsed(r) and r["method"] in colors and r.get(metric) is not None:
      ax.plot(x_of(r), bottom, marker="x", ms=7, color=colors[r["method"]], clip_on=False)


def plot_accuracy_vs_sparsity(records: Sequence[Record], path: str,
                              metric: str = "final_test_top1") -> None:
  """Accuracy vs remaining-weight fraction (log x, inverted: sparsity grows to the right).

  One line per method with ± std error bars and band over the runs that are not collapsed
  (`collapsed`); each collapsed run is an 'x' on the bottom edge. The y range covers the runs
  that are not collapsed, so a method whose network is cut does not squeeze the others into
  one band. Dense as a dashed horizontal line.
  """
  kept = [r for r in records if not collapsed(r)]
  stats = group_stats(kept, metric)
  methods, sparsities = ordered_methods(records), ordered_sparsities(records)
  colors = _method_colors(methods)
  fig, ax = _new_figure(7.0, 4.5)
  _sparsity_axis(ax, sparsities)
  for m in methods:
    points = [(1.0 - s, stats[(m, s)]) for s in sparsities if (m, s) in stats]
    if not points:
      continue
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
  _informative_ylim(ax, [100 * float(r[metric]) for r in kept if r.get(metric) is not None])
  _mark_collapsed(ax, records, lambda r: 1.0 - float(r["sparsity"]), metric, colors)
  _finish(fig, ax, path, "sparsity (log scale of remaining weights); x: a collapsed run",
          f"{metric.replace('_', ' ')} (%)")


def plot_accuracy_vs_effective_density(records: Sequence[Record], path: str,
                                       metric: str = "final_test_top1") -> None:
  """Every pruned run's accuracy against its effective density (log x, sparser to the right),
  one color per method, method means per nominal density joined by a line; collapsed runs as
  'x' on the bottom edge (`plot_accuracy_vs_sparsity`)."""
  runs = [r for r in records if float(r["sparsity"]) > 0 and r.get(metric) is not None
          and r.get("effective_density_total")]
  kept = [r for r in runs if not collapsed(r)]
  methods = ordered_methods(runs)
  colors = _method_colors(methods)
  fig, ax = _new_figure(7.0, 4.5)
  ax.set_xscale("log")
  ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}%"))
  ax.minorticks_off()
  for m in methods:
    mine = [r for r in kept if r["method"] == m]
    if not mine:
      continue
    ax.scatter([100 * r["effective_density_total"] for r in mine],
               [100 * float(r[metric]) for r in mine], s=10, color=colors[m], alpha=0.5)
    by_sparsity = defaultdict(list)
    for r in mine:
      by_sparsity[float(r["sparsity"])].append(
          (100 * r["effective_density_total"], 100 * float(r[metric])))
    means = sorted((np.mean([e for e, _ in v]), np.mean([a for _, a in v]))
                   for v in by_sparsity.values())
    ax.plot(*zip(*means), marker="o", ms=4, color=colors[m], label=m)
  if runs:
    ax.set_xlim(max(100 * r["effective_density_total"] for r in runs) * 1.25,
                min(100 * r["effective_density_total"] for r in runs) / 1.25)
  _informative_ylim(ax, [100 * float(r[metric]) for r in kept])
  _mark_collapsed(ax, runs, lambda r: 100 * r["effective_density_total"], metric, colors)
  _finish(fig, ax, path,
          "effective density (prunable weights on an input-output path, log)",
          f"{metric.replace('_', ' ')} (%)")


OFF_SCALE_POINTS = 10.0
"""Differences beyond ± this many points (a collapsed network at chance against a trained one;
working methods differ by about a point) are drawn as arrows at the edge with their value, so
that they do not squeeze the others into one band."""


def difference_limits(comparisons: Sequence[Comparison]) -> tuple[float, float]:
  """Axis range of the differences: the corrected intervals of the comparisons within
  ±`OFF_SCALE_POINTS`, with a margin, never wider than ±`OFF_SCALE_POINTS` and always
  showing 0."""
  ends = [0.0] + [e for c in comparisons if abs(c.mean) <= OFF_SCALE_POINTS
                  for e in (c.mean, c.low, c.high) if not math.isnan(e)]
  low, high = min(ends), max(ends)
  margin = 0.1 * (high - low) or 1.0
  return max(low - margin, -OFF_SCALE_POINTS), min(high + margin, OFF_SCALE_POINTS)


def _draw_difference(ax: Any, position: float, c: Comparison, color: Any,
                     limits: tuple[float, float], vertical: bool, label_row: int = 0) -> None:
  """One comparison at `position`: its mean and corrected interval (values along y when
  `vertical`, else along x), hollow when 'indistinguishable'; a mean outside `limits` is an
  arrow at the edge labelled with its value, the label moved inwards by `label_row` lines (for
  several arrows at one edge of one position)."""
  fill = "none" if c.verdict == "indistinguishable" else "full"
  if limits[0] <= c.mean <= limits[1]:
    err = [[_nan_to_zero(c.mean - c.low)], [_nan_to_zero(c.high - c.mean)]]
    xy = ([position], [c.mean]) if vertical else ([c.mean], [position])
    ax.errorbar(*xy, **{"yerr" if vertical else "xerr": err}, capsize=3, color=color,
                marker="o", ms=5, fillstyle=fill)
    return
  edge = limits[1] if c.mean > 0 else limits[0]
  marker = ("^" if c.mean > 0 else "v") if vertical else (">" if c.mean > 0 else "<")
  xy = (position, edge) if vertical else (edge, position)
  ax.plot(*xy, marker=marker, ms=8, color=color, fillstyle=fill, clip_on=False)
  inward = 6 + 9 * label_row
  ax.annotate(f"{c.mean:+.1f}", xy, textcoords="offset points", fontsize=7, color=color,
              xytext=((0, -inward - 5 if c.mean > 0 else inward) if vertical
                      else (-8 if c.mean > 0 else 8, 5)),
              ha="center" if vertical else ("right" if c.mean > 0 else "left"))


def plot_paired_differences(comparisons: Sequence[Comparison], reference: str,
                            path: str) -> None:
  """The reference minus each arm per density, with the family-wise corrected intervals
  (`study_statistics`): one line per arm, the x axis as in `plot_accuracy_vs_sparsity`, a
  dashed zero line; a filled marker where the corrected verdict is not 'indistinguishable';
  differences beyond ±`OFF_SCALE_POINTS` as labelled arrows at the edge."""
  arms = list(dict.fromkeys(c.arm for c in comparisons))
  colors = _method_colors(arms)
  limits = difference_limits(comparisons)
  fig, ax = _new_figure(7.0, 4.5)
  _sparsity_axis(ax, sorted({c.sparsity for c in comparisons}))
  ax.set_ylim(*limits)
  off_scale_rows: dict[tuple[float, bool, bool], int] = defaultdict(int)
  for i, arm in enumerate(arms):
    mine = sorted((c for c in comparisons if c.arm == arm), key=lambda c: c.sparsity)
    shift = 1.0 + 0.02 * (i - (len(arms) - 1) / 2)  # side by side, not on top of each other
    x = [(1.0 - c.sparsity) * shift for c in mine]
    line = [c.mean if limits[0] <= c.mean <= limits[1] else math.nan for c in mine]
    ax.plot(x, line, color=colors[arm], label=arm)  # broken where a difference is off scale
    for xi, c in zip(x, mine):
      side = (c.sparsity, c.mean > limits[1], c.mean < limits[0])
      _draw_difference(ax, xi, c, colors[arm], limits, vertical=True,
                       label_row=off_scale_rows[side])
      off_scale_rows[side] += any(side[1:])
  ax.axhline(0.0, color="black", ls="--", lw=1.0)
  _finish(fig, ax, path, "sparsity; filled marker: the corrected interval excludes 0; "
          f"arrow: beyond ±{OFF_SCALE_POINTS:g} points", f"{reference} minus arm (points)")


def plot_range_differences(comparisons: Sequence[Comparison], reference: str,
                           sparsities: Sequence[float], path: str) -> None:
  """The reference minus each arm averaged over `sparsities` (`study_statistics`), one row per
  arm with its family-wise corrected interval, drawn as in `plot_paired_differences`."""
  arms = [c.arm for c in comparisons]
  colors = _method_colors(arms)
  limits = difference_limits(comparisons)
  fig, ax = _new_figure(6.0, 0.45 * len(arms) + 1.6)
  ax.set_xlim(*limits)
  for y, c in enumerate(comparisons):
    _draw_difference(ax, y, c, colors[c.arm], limits, vertical=False)
  ax.axvline(0.0, color="black", ls="--", lw=1.0)
  ax.set_yticks(range(len(arms)), arms)
  ax.set_ylim(len(arms) - 0.5, -0.5)
  ax.set_title(f"averaged over sparsity {sparsity_label(min(sparsities))} to "
               f"{sparsity_label(max(sparsities))}\nfilled: the corrected interval excludes 0; "
               f"arrow: beyond ±{OFF_SCALE_POINTS:g} points", fontsize=9)
  ax.set_xlabel(f"{reference} minus arm (points)")
  ax.grid(True, alpha=0.3)
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
