"""Sweep resume, chunking and collection (fake and real training); report table and plots."""

import csv
import json
import os
import pathlib

import matplotlib.image
import ml_collections
import numpy as np
import pytest

from prospr_jax.experiment import grid_sweep, study_plots, study_records, study_report

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ("Dense_0/kernel", "Dense_1/kernel", "head/kernel")


def small_config() -> ml_collections.ConfigDict:
  """The fields a sweep sets, plus one it leaves alone."""
  return ml_collections.ConfigDict(
      {"seed": 0, "prune": {"method": "prospr", "sparsity": 0.5}, "train": {"num_epochs": 1}})


class FakeRun:
  """`run_fn` that writes a plausible results.json instantly and counts its calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, config, workdir):
    self.calls.append(workdir)
    s = config.prune.sparsity
    results = {
        "config": json.loads(config.to_json()),
        "final_test_top1": 0.9 - 0.1 * s + 0.01 * config.seed,
        "best_test_top1": 0.95 - 0.1 * s,
        "density": {**{f"density/{n}": (1 - s) * (i + 1) / 2 for i, n in enumerate(LAYERS)},
                    "density/total": 1 - s, "sparsity/total": s},
        "prune_seconds": 0.1, "train_seconds": 1.0, "history": [],
    }
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, grid_sweep.RESULTS_FILE), "w") as f:
      json.dump(results, f)
    return results


GRID = grid_sweep.expand_grid(["snip", "magnitude"], [0.9, 0.99], [0, 1], include_dense=True)


def test_expand_grid_and_run_dirs():
  assert len(GRID) == 2 * (1 + 2 * 2)
  assert len(set(GRID)) == len(GRID)
  assert sum(p.is_dense for p in GRID) == 2
  dense, pruned = GRID[0], GRID[1]
  assert grid_sweep.run_dir("/r", dense) == os.path.join("/r", "dense", "seed0")
  assert grid_sweep.run_dir("/r", pruned) == os.path.join("/r", "snip", "s0.9", "seed0")
  assert grid_sweep.expand_grid(["snip"], [0.9], [0], include_dense=False) == [
      grid_sweep.GridPoint("snip", 0.9, 0)]
  with pytest.raises(ValueError, match="outside"):
    grid_sweep.expand_grid(["snip"], [1.0], [0])


def test_point_config_copies():
  base = small_config()
  cfg = grid_sweep.point_config(base, grid_sweep.GridPoint("snip", 0.99, 3))
  assert (cfg.prune.method, cfg.prune.sparsity, cfg.seed) == ("snip", 0.99, 3)
  assert (base.prune.method, base.prune.sparsity, base.seed) == ("prospr", 0.5, 0)


def test_sweep_resumes_and_runs_in_chunks(tmp_path):
  root = str(tmp_path)
  fake = FakeRun()

  first = grid_sweep.run_sweep(small_config(), root, GRID, run_fn=fake, max_runs=3)
  assert len(fake.calls) == 3 and len(first.ran) == 3 and len(first.remaining) == len(GRID) - 3
  assert len(grid_sweep.load_collection(os.path.join(root, grid_sweep.COLLECTION_JSON))) == 3

  second = grid_sweep.run_sweep(small_config(), root, GRID, run_fn=fake)
  assert len(fake.calls) == len(GRID) and len(set(fake.calls)) == len(GRID)
  assert len(second.skipped) == 3 and not second.remaining

  third = grid_sweep.run_sweep(small_config(), root, GRID, run_fn=fake)
  assert len(fake.calls) == len(GRID), "a finished sweep must not run anything again"
  assert len(third.skipped) == len(GRID) and not third.ran

  records = grid_sweep.load_collection(os.path.join(root, grid_sweep.COLLECTION_JSON))
  assert {(r["method"], r["sparsity"], r["seed"]) for r in records} == {
      (p.method, p.sparsity, p.seed) for p in GRID}
  snip = next(r for r in records if r["method"] == "snip" and r["sparsity"] == 0.99)
  assert snip["density_total"] == pytest.approx(0.01)
  assert set(snip["layer_density"]) == set(LAYERS)
  with open(os.path.join(root, grid_sweep.COLLECTION_CSV)) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(GRID) and tuple(rows[0]) == grid_sweep.CSV_FIELDS


def test_truncated_results_are_redone(tmp_path):
  root, fake = str(tmp_path), FakeRun()
  point = grid_sweep.GridPoint("snip", 0.9, 0)
  grid_sweep.run_sweep(small_config(), root, [point], run_fn=fake)
  path = os.path.join(grid_sweep.run_dir(root, point), grid_sweep.RESULTS_FILE)
  with open(path, "r+") as f:
    f.truncate(20)  # as if the run was killed while writing
  grid_sweep.run_sweep(small_config(), root, [point], run_fn=fake)
  assert len(fake.calls) == 2
  assert grid_sweep.read_results(grid_sweep.run_dir(root, point)) is not None


def test_results_of_another_config_are_refused(tmp_path):
  root, fake = str(tmp_path), FakeRun()
  point = grid_sweep.GridPoint("snip", 0.9, 0)
  grid_sweep.run_sweep(small_config(), root, [point], run_fn=fake)
  other = small_config()
  other.train.num_epochs = 2
  with pytest.raises(ValueError, match="train.num_epochs"):
    grid_sweep.run_sweep(other, root, [point], run_fn=fake)
  assert len(fake.calls) == 1


def test_failed_run_does_not_stop_the_sweep(tmp_path):
  root, fake = str(tmp_path), FakeRun()

  def flaky(config, workdir):
    if config.prune.method == "snip":
      raise RuntimeError("layer collapse")
    return fake(config, workdir)

  summary = grid_sweep.run_sweep(small_config(), root, GRID, run_fn=flaky, max_runs=4)
  assert summary.attempted == 4 and len(summary.failed) + len(summary.ran) == 4
  assert all(p.method == "snip" for p in summary.failed) and len(fake.calls) == len(summary.ran)
  again = grid_sweep.run_sweep(small_config(), root, GRID, run_fn=fake)
  assert set(again.ran) == set(GRID) - set(summary.ran), "failed runs are retried"


def test_sweep_end_to_end_with_real_training(tmp_path, monkeypatch, fashion_mnist_data_dir):
  """Real training on configs/test.py: 'dense' and 'magnitude', then a resume that runs nothing.

  Uses `run_sweep`'s default run_fn, so a broken `prospr_jax.experiment.train` fails here (not skipped).
  """
  monkeypatch.syspath_prepend(str(REPO_ROOT))
  from configs import test as test_config  # pylint: disable=g-import-not-at-top

  root = str(tmp_path)
  config = test_config.get_config()
  config.data_dir = fashion_mnist_data_dir
  grid = grid_sweep.expand_grid(["magnitude"], [0.9], [0], include_dense=True)
  first = grid_sweep.run_sweep(config, root, grid)
  assert len(first.ran) == 2
  second = grid_sweep.run_sweep(config, root, grid)
  assert not second.ran and len(second.skipped) == 2
  records = {r["method"]: r for r in
             grid_sweep.load_collection(os.path.join(root, grid_sweep.COLLECTION_JSON))}
  assert set(records) == {"dense", "magnitude"}
  assert records["dense"]["density_total"] == pytest.approx(1.0)
  assert records["magnitude"]["density_total"] == pytest.approx(0.1, abs=1e-3)
  assert 0.0 <= records["magnitude"]["final_test_top1"] <= 1.0


# Hand-made accuracies: snip is best at 90%, prospr at 99%.
ACCURACY = {
    ("prospr", 0.9): (0.912, 0.918), ("prospr", 0.99): (0.871, 0.859),
    ("snip", 0.9): (0.921, 0.915), ("snip", 0.99): (0.802, 0.834),
    ("dense", 0.0): (0.931, 0.927),
}


def synthetic_records():
  records = []
  for (method, s), values in ACCURACY.items():
    for seed, acc in enumerate(values):
      layers = {} if method == "dense" else {
          n: (1 - s) * (i + 1) / 2 + 0.01 * seed for i, n in enumerate(LAYERS)}
      records.append({"method": method, "sparsity": s, "seed": seed, "final_test_top1": acc,
                      "density_total": 1 - s, "layer_density": layers, "git_commit": "c1",
                      "git_dirty": False, "workdir": f"{method}/{s}/{seed}"})
  return records


def parse_table(markdown: str) -> dict[str, list[str]]:
  """`{row name: cells}` of a markdown table (the header row keyed by its first cell)."""
  rows = [line.strip().strip("|").split("|") for line in markdown.splitlines()
          if line.startswith("|") and "---" not in line]
  return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def expected_cell(values) -> str:
  x = 100 * np.asarray(values)
  return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}"


def test_results_table_cells_and_bolding():
  table = study_report.results_table(synthetic_records())
  assert "ddof=1" in table
  rows = parse_table(table)
  header = next(k for k in rows if k.startswith("method"))
  assert rows[header] == ["90%", "99%"]
  assert rows["prospr"] == [expected_cell(ACCURACY[("prospr", 0.9)]),
                            f"**{expected_cell(ACCURACY[('prospr', 0.99)])}**"]
  assert rows["snip"] == [f"**{expected_cell(ACCURACY[('snip', 0.9)])}**",
                          expected_cell(ACCURACY[("snip", 0.99)])]
  assert rows["dense"] == [expected_cell(ACCURACY[("dense", 0.0)])] * 2  # never bold


def test_results_table_marks_missing_seeds():
  records = [r for r in synthetic_records()
             if not (r["method"] == "snip" and r["sparsity"] == 0.99 and r["seed"] == 1)]
  rows = parse_table(study_report.results_table(records))
  assert rows["snip"][1] == f"{100 * ACCURACY[('snip', 0.99)][0]:.2f} (n=1)"
  assert "(n=" not in rows["prospr"][1]


def assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_write_report(tmp_path):
  paths = study_report.write_report(synthetic_records(), str(tmp_path))
  names = [os.path.basename(p) for p in paths]
  assert names == [study_report.TABLE_FILE, study_report.ACCURACY_PLOT_FILE,
                   study_report.DIFFERENCES_PLOT_FILE, study_report.DENSITY_PLOT_FILE]
  assert (tmp_path / study_report.TABLE_FILE).read_text().count("**") == 4
  for path in paths[1:]:
    assert_png(path)


def test_layer_densities_default_and_missing_sparsity():
  layers, densities = study_plots.layer_densities(synthetic_records(), 0.99)
  assert layers == list(LAYERS) and set(densities) == {"prospr", "snip"}
  np.testing.assert_allclose(densities["snip"], [0.01 * (i + 1) / 2 + 0.005 for i in range(3)])
  with pytest.raises(ValueError, match="No per-layer densities"):
    study_plots.plot_layer_density(synthetic_records(), "unused.png", sparsity=0.5)


def test_arms_set_their_modifiers_and_run_dirs():
  base = small_config()
  base.prune.allocation = "global"
  base.prune.sanity_check = None
  grid = grid_sweep.expand_grid(["prospr+shuffle", "random+erk", "dense+x2"], [0.9], [0],
                           include_dense=True)
  assert [str(p) for p in grid] == [
      "dense seed=0", "dense+x2 seed=0", "prospr+shuffle sparsity=0.9 seed=0",
      "random+erk sparsity=0.9 seed=0"]
  dense_x2, shuffle, erk = (grid_sweep.point_config(base, p) for p in grid[1:])
  assert (dense_x2.prune.method, dense_x2.train.num_epochs, dense_x2.sweep_arm) == (
      "dense", 2, "dense+x2")
  assert (shuffle.prune.method, shuffle.prune.sanity_check) == ("prospr", "shuffle")
  assert (erk.prune.method, erk.prune.allocation) == ("random", "erk")
  assert base.train.num_epochs == 1 and base.prune.sanity_check is None
  assert grid_sweep.run_dir("/r", grid[1]) == os.path.join("/r", "dense+x2", "seed0")
  assert grid_sweep.run_dir("/r", grid[2]) == os.path.join("/r", "prospr+shuffle", "s0.9", "seed0")
  with pytest.raises(ValueError, match="Bad sweep arm 'snip\\+shufle'"):
    grid_sweep.expand_grid(["snip+shufle"], [0.9], [0])


def test_records_carry_arm_connectivity_and_commit():
  config = grid_sweep.point_config(small_config(), grid_sweep.GridPoint("prospr+shuffle", 0.9, 1))
  results = {
      "config": json.loads(config.to_json()), "final_test_top1": 0.5,
      "connectivity": {"effective_density/total": 0.07, "inactive_fraction": 0.3,
                       "empty_layers": [], "disconnected_layers": ["a", "b"]},
      "provenance": {"git_commit": "abc", "git_dirty": False},
  }
  record = grid_sweep.record_from_results(results)
  assert (record["method"], record["prune_method"], record["sparsity"], record["seed"]) == (
      "prospr+shuffle", "prospr", 0.9, 1)
  assert (record["effective_density_total"], record["inactive_fraction"],
          record["num_empty_layers"], record["num_disconnected_layers"]) == (0.07, 0.3, 0, 2)
  assert (record["git_commit"], record["git_dirty"]) == ("abc", False)


def _record(method, sparsity, seed, acc, commit="c1", **extra):
  return {"method": method, "sparsity": sparsity, "seed": seed, "final_test_top1": acc,
          "git_commit": commit, "git_dirty": False, "workdir": f"{method}/{sparsity}/{seed}",
          **extra}


def test_paired_differences_and_student_t_interval():
  prospr, snip = (0.80, 0.83, 0.81), (0.78, 0.80, 0.82)
  records = ([_record("prospr", 0.9, s, a) for s, a in enumerate(prospr)]
             + [_record("snip", 0.9, s, a) for s, a in enumerate(snip)]
             + [_record("snip", 0.99, 0, 0.5), _record("prospr", 0.99, 0, 0.6)])
  diffs = study_report.paired_differences(records)
  d = 100 * (np.array(prospr) - np.array(snip))  # [2, 3, -1]
  half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
  got = diffs[("snip", 0.9)]
  assert got.n == 3 and got.mean == pytest.approx(d.mean())
  assert (got.low, got.high) == pytest.approx((d.mean() - half, d.mean() + half))
  single = diffs[("snip", 0.99)]
  assert single.n == 1 and single.mean == pytest.approx(10.0) and np.isnan(single.low)
  rows = parse_table(study_report.paired_table(records))
  assert rows["snip"] == [study_report.format_interval(got), "+10.00 (n=1)"]


def test_report_refuses_mixed_commits_unless_allowed(tmp_path):
  records = [_record("prospr", 0.9, 0, 0.8, "c1"), _record("snip", 0.9, 0, 0.7, "c2")]
  with pytest.raises(ValueError, match=r"2 commit\(s\).*c1: \['prospr'\].*c2: \['snip'\]"):
    study_report.write_report(records, str(tmp_path))
  dirty = [_record("prospr", 0.9, 0, 0.8), {**_record("snip", 0.9, 0, 0.7), "git_dirty": True}]
  with pytest.raises(ValueError, match="1 run\\(s\\) from a modified tree"):
    study_report.check_provenance(dirty)
  assert study_report.check_provenance(records, allow_mixed=True) == ["c1", "c2"]
  study_report.write_report(records, str(tmp_path), allow_mixed_commits=True)
  assert "c1, c2" in (tmp_path / study_report.TABLE_FILE).read_text()


def test_report_sections_for_a_study(tmp_path):
  records = [_record("dense", 0.0, s, 0.9 + 0.001 * s) for s in range(2)]
  records += [_record("dense+x2", 0.0, s, 0.902 + 0.001 * s) for s in range(2)]
  records += [_record("prospr+x2", 0.98, s, 0.854 + 0.002 * s) for s in range(2)]
  for method, acc in (("prospr", 0.85), ("snip", 0.84), ("prospr+shuffle", 0.80)):
    records += [_record(method, 0.98, s, acc, effective_density_total=0.015,
                        inactive_fraction=0.25, num_disconnected_layers=int(s == 1),
                        prune_seconds=2.0 + s) for s in range(2)]
  study_report.write_report(records, str(tmp_path))
  text = (tmp_path / study_report.TABLE_FILE).read_text()
  main = parse_table(text.split("\n\n")[2])
  assert set(main) >= {"dense", "prospr", "snip"}
  assert not {"prospr+shuffle", "prospr+x2", "dense+x2"} & set(main)
  assert "| snip | +1.00 [+1.00, +1.00] |" in text
  assert "| prospr | 1.50 / 25% / 1 disc. |" in text
  # Gains: dense +0.2 per seed, ProsPr +0.4 and +0.6; '+x2' arms stay out of the other tables.
  assert "| dense | 0% | 90.05 ± 0.07 | 90.25 ± 0.07 | +0.20 [+0.20, +0.20] | yes |" in text
  half = 12.706204736174707 * np.std([0.4, 0.6], ddof=1) / np.sqrt(2)  # t(0.975, 1 dof)
  assert (f"| prospr | 98% | 85.00 ± 0.00 | 85.50 ± 0.14 | +0.50 [{0.5 - half:+.2f}, "
          f"{0.5 + half:+.2f}] | **no** |") in text
  assert "prospr+x2" not in text.split("Convergence:")[0]
  assert "| prospr+shuffle | 80.00 ± 0.00 |" in text
  assert "| prospr − prospr+shuffle | +5.00 [+5.00, +5.00] |" in text
  assert "| prospr | 2.5 | 2.0 | 3.0 | 2 |" in text


def test_population_sweep_in_chunks_and_a_failing_population(tmp_path):
  """Populations of at most 3 of a 10-point grid: max_runs cuts a population short (its rest is
  left for later); a population that fails fails all its points; finished points are skipped."""
  root, fake = str(tmp_path), FakeRun()
  populations = []

  def population_fn(configs, workdirs, population_dir):
    populations.append(len(configs))
    if any(c.prune.method == "magnitude" and c.seed == 1 for c in configs):
      raise RuntimeError("a broken population")
    return [fake(c, w) for c, w in zip(configs, workdirs)]

  first = grid_sweep.run_sweep(small_config(), root, GRID, max_runs=4, population_size=3,
                               population_fn=population_fn)
  assert populations == [3, 1] and len(first.ran) == 4 and len(first.remaining) == 6
  rest = grid_sweep.run_sweep(small_config(), root, GRID, population_size=3,
                              population_fn=population_fn)
  # The 6 left regroup as [magnitude 0.99 seed 0, dense seed 1, snip 0.9 seed 1] and the 3
  # other seed-1 points, which hold the broken member.
  assert len(rest.skipped) == 4 and populations[2:] == [3, 3]
  point = grid_sweep.GridPoint
  assert rest.ran == [point("magnitude", 0.99, 0), point("dense", 0.0, 1), point("snip", 0.9, 1)]
  assert rest.failed == [point("magnitude", 0.9, 1), point("snip", 0.99, 1),
                         point("magnitude", 0.99, 1)]


def test_selected_arms_make_the_corrected_family():
  arms = ("dense", "dense+x2", "prospr", "prospr+shuffle", "prospr+x2", "snip", "synflow",
          "synflow+shuffle", "random+erk")
  records = [_record(m, 0.0 if m.startswith("dense") else 0.9, s, 0.8 + 0.01 * s + 0.001 * i)
             for i, m in enumerate(arms) for s in range(3)]
  kept = study_records.select_arms(records, ["prospr", "snip", "random+erk"])
  assert sorted({r["method"] for r in kept}) == [
      "dense", "dense+x2", "prospr", "prospr+shuffle", "prospr+x2", "random+erk", "snip"]
  def family(rs):  # what write_report corrects: the pruned arms, no convergence arms
    return sorted(c.arm for c in study_report.reference_comparisons(
        [r for r in rs if not study_records.is_convergence_arm(r["method"])]))
  assert family(kept) == ["random+erk", "snip"]
  assert family(records) == ["random+erk", "snip", "synflow"]
  with pytest.raises(ValueError, match=r"No records of the arm\(s\) \['snp'\]"):
    study_records.select_arms(records, ["prospr", "snp"])
