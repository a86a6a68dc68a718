"""Corrected comparisons of a study: Holm's adjustment, paired p-values, Bonferroni intervals,
verdicts, and comparisons at matched effective density; and the report's use of them."""

import math

import numpy as np
import pytest
import scipy.stats

from prospr_jax.experiment import study_plots, study_report, study_statistics as st


def test_holm_adjustment_matches_a_hand_computation():
  # Sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max.
  assert st.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert st.holm_adjust([0.9, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_paired_p_value_is_the_paired_t_test_and_handles_degenerate_cases():
  a, b = np.array([80.1, 79.4, 81.0, 80.2]), np.array([79.0, 79.5, 80.1, 79.9])
  assert st.paired_p_value(a - b) == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)
  assert st.paired_p_value([1.0]) == 1.0
  assert st.paired_p_value([0.0, 0.0]) == 1.0
  assert st.paired_p_value([0.5, 0.5, 0.5]) == 0.0


def _records(accuracy, effective=None, seeds=3):
  """Records from `{(method, sparsity): accuracy per seed}` (fractions)."""
  out = []
  for (method, sparsity), values in accuracy.items():
    for seed, acc in enumerate(values[:seeds]):
      r = {"method": method, "sparsity": sparsity, "seed": seed, "final_test_top1": acc}
      if effective is not None:
        r |= {"effective_density_total": effective[(method, sparsity)], "inactive_fraction": 0.0}
      out.append(r)
  return out


def test_verdicts_and_corrected_intervals_agree():
  records = _records({
      ("prospr", 0.9): [0.80, 0.81, 0.79, 0.80, 0.805],
      ("bad", 0.9): [0.60, 0.62, 0.59, 0.61, 0.60],      # far behind in every seed
      ("noise", 0.9): [0.81, 0.79, 0.80, 0.805, 0.80],   # as good, differently ordered
  }, seeds=5)
  family = st.correct_family(st.paired_differences(records, "prospr", ["bad", "noise"]))
  verdicts = {c.arm: c.verdict for c in family}
  assert verdicts == {"bad": "ahead", "noise": "indistinguishable"}
  for c in family:
    # Where the Bonferroni interval excludes 0, Holm (no less powerful) finds a difference too.
    if c.low > 0 or c.high < 0:
      assert c.verdict != "indistinguishable"
    half = scipy.stats.t.ppf(1 - st.ALPHA / 4, c.n - 1) * np.std(
        st.paired_differences(records, "prospr", [c.arm])[(c.arm, 0.9)], ddof=1) / math.sqrt(c.n)
    assert (c.low, c.high) == pytest.approx((c.mean - half, c.mean + half))


def test_interpolation_is_linear_in_log_effective_density_without_extrapolation():
  assert st.interpolate_log(0.02, [0.01, 0.04], [70.0, 90.0]) == pytest.approx(80.0)
  assert st.interpolate_log(0.05, [0.01, 0.04], [70.0, 90.0]) is None
  assert st.interpolate_log(0.005, [0.01, 0.04], [70.0, 90.0]) is None


def test_matched_effective_density_compares_at_the_references_effective_density():
  # The arm's accuracy is exactly linear in log effective density: 100 + 10 * log2(eff / 0.04).
  effective = {("prospr", 0.9): 0.02, ("arm", 0.8): 0.04, ("arm", 0.95): 0.01}
  accuracy = {("prospr", 0.9): [0.95] * 3, ("arm", 0.8): [1.0] * 3, ("arm", 0.95): [0.80] * 3}
  diffs = st.matched_effective_differences(_records(accuracy, effective), "prospr", ["arm"])
  assert diffs == {("arm", 0.9): pytest.approx([5.0, 5.0, 5.0])}  # 95 - 90 at eff = 0.02


def test_report_writes_the_corrected_and_matched_tables(tmp_path):
  effective = {(m, s): (1 - s) * f for m, f in (("prospr", 0.9), ("snip", 0.8))
               for s in (0.9, 0.95)}
  accuracy = {("prospr", 0.9): [0.80, 0.81, 0.79], ("prospr", 0.95): [0.75, 0.76, 0.74],
              ("snip", 0.9): [0.70, 0.72, 0.69], ("snip", 0.95): [0.60, 0.61, 0.62]}
  records = [dict(r, git_commit="c", git_dirty=False, workdir="w")
             for r in _records(accuracy, effective)]
  paths = study_report.write_report(records, str(tmp_path), average_sparsities=[0.9, 0.95])
  text = (tmp_path / study_report.TABLE_FILE).read_text()
  assert "Holm-Bonferroni correction over all 2 comparisons" in text
  assert "averaged over the densities at sparsity 90%, 95%" in text
  assert "correction over the 1 arm(s)" in text
  assert "at prospr's effective density" in text
  assert text.count("ahead (p=") >= 2
  assert {p.rsplit("/", 1)[-1] for p in paths} >= {study_report.EFFECTIVE_PLOT_FILE,
                                                    study_report.DIFFERENCES_PLOT_FILE,
                                                    study_report.RANGE_PLOT_FILE}
  with open(tmp_path / study_report.RANGE_PLOT_FILE, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_range_comparison_averages_each_seed_then_compares_over_seeds(tmp_path):
  accuracy = {("prospr", 0.9): [0.80, 0.81, 0.79], ("prospr", 0.95): [0.75, 0.76, 0.74],
              ("snip", 0.9): [0.79, 0.80, 0.80], ("snip", 0.95): [0.73, 0.75, 0.72],
              ("late", 0.9): [0.70, 0.70, 0.70]}  # no run at 0.95: no range comparison
  records = _records(accuracy)
  records = [r for r in records if (r["method"], r["sparsity"], r["seed"]) != ("snip", 0.95, 2)]
  diffs = st.range_mean_differences(records, "prospr", ["snip", "late"], [0.9, 0.95])
  # Seeds 0 and 1 ran both densities: (1 + 2) / 2 and (1 + 1) / 2 points.
  assert diffs == {("snip", None): pytest.approx([1.5, 1.0])}
  records += [{"method": "snip", "sparsity": 0.95, "seed": 2, "final_test_top1": 0.72}]
  family = study_report.range_comparisons(records, [0.9, 0.95])
  assert [c.arm for c in family] == ["snip"]
  per_seed = np.array([1.5, 1.0, (-1 + 2) / 2])
  half = scipy.stats.t.ppf(1 - st.ALPHA / 2, 2) * per_seed.std(ddof=1) / math.sqrt(3)
  (c,) = family
  assert (c.sparsity, c.n, c.mean) == (None, 3, pytest.approx(per_seed.mean()))
  assert (c.low, c.high) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
  assert c.p_value == pytest.approx(scipy.stats.ttest_1samp(per_seed, 0.0).pvalue)
  assert "| snip | " in study_report.range_table(family, [0.9, 0.95])
  with pytest.raises(ValueError, match=r"No pruned runs at sparsity \[0\.99\]"):
    study_report.range_comparisons(records, [0.9, 0.99])


def test_difference_plots_keep_working_methods_on_scale_and_mark_collapses(tmp_path):
  def comparison(arm, mean, half):
    return st.Comparison(arm, 0.99, mean, mean - half, mean + half, 3, 0.5, 1.0)

  family = [comparison("snip", 0.4, 0.8), comparison("synflow", -0.6, 1.0),
            comparison("magnitude", 76.4, 3.0)]  # a collapse: chance against a trained network
  low, high = study_plots.difference_limits(family)
  assert -1.6 - 0.35 <= low < -1.6 and 1.2 < high <= 1.2 + 0.35  # the working methods, a margin
  wide = [comparison("grasp", 5.0, 20.0), comparison("magnitude", -70.0, 1.0)]
  assert study_plots.difference_limits(wide) == (-study_plots.OFF_SCALE_POINTS,
                                                 study_plots.OFF_SCALE_POINTS)
  study_plots.plot_paired_differences(family, "prospr", str(tmp_path / "d.png"))
  study_plots.plot_range_differences(family, "prospr", [0.9, 0.99], str(tmp_path / "r.png"))
  assert (tmp_path / "d.png").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0
