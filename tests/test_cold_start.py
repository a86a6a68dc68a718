"""The cold-start benchmark's plumbing (`prospr_jax.benchmark.cold_start`, run by
experiments/cold_start_benchmark.py) on tiny stand-in processes, its table on a hand-made record,
and experiments/reference_benchmark.py's `--repeats=0` (where torch is installed)."""

import importlib.util
import os
import pathlib
import statistics
import sys

import pytest

from prospr_jax.benchmark import cold_start

_SLEEP_S = 0.2


def _python(code: str) -> list[str]:
  return [sys.executable, "-c", code]


def test_seconds_until_file_times_the_file_and_ends_the_process(tmp_path):
  target, pid_file = tmp_path / "masks.npz", tmp_path / "pid"
  code = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
          f"time.sleep({_SLEEP_S}); open({str(target)!r}, 'w').close(); time.sleep(60)")
  seconds = cold_start.seconds_until_file(_python(code), target, os.environ, timeout_s=30)
  assert _SLEEP_S <= seconds < 15
  with pytest.raises(ProcessLookupError):  # killed and reaped, long before its 60 s sleep
    os.kill(int(pid_file.read_text()), 0)


def test_seconds_until_file_raises_with_the_stderr_tail_of_a_process_that_exits(tmp_path):
  code = "import sys; sys.stderr.write('x' * 5000 + 'the last words'); sys.exit(3)"
  with pytest.raises(RuntimeError, match="status 3") as raised:
    cold_start.seconds_until_file(_python(code), tmp_path / "never", os.environ, timeout_s=30)
  message = str(raised.value)
  assert message.endswith("the last words") and message.count("x") < 2100


def test_seconds_until_file_raises_at_its_timeout(tmp_path):
  with pytest.raises(RuntimeError, match="within 0.3 s"):
    cold_start.seconds_until_file(_python("import time; time.sleep(60)"), tmp_path / "never",
                                  os.environ, timeout_s=0.3)


def test_seconds_until_exit_times_a_process_and_raises_on_failure():
  assert _SLEEP_S <= cold_start.seconds_until_exit(
      _python(f"import time; time.sleep({_SLEEP_S})"), os.environ, timeout_s=30) < 15
  with pytest.raises(RuntimeError, match="status 1(.|\n)*broken"):
    cold_start.seconds_until_exit(_python("raise SystemExit('broken')"), os.environ,
                                  timeout_s=30)


def test_overrides_are_read_as_prune_and_train_reads_them():
  assert cold_start.prune_config(["--config.prune.batch_size=32"]).prune.batch_size == 32
  with pytest.raises(ValueError, match="no field 'nope'"):
    cold_start.prune_config(["--config.prune.nope=1"])
  with pytest.raises(ValueError, match="snip"):
    cold_start.run_cold_start(ks=(1,), overrides=["--config.prune.method=snip"])


def _record(rows):
  return {"code": {"git_commit": "abc", "git_dirty": False},
          "config": {"model": "small_convnet", "batch_size": 128, "cpu_count": 2,
                     "repeats": 3},
          "rows": rows}


def test_the_table_shows_medians_ratios_and_the_goals_met_or_missed():
  # k=1 meets both goals, k=3 misses both; medians are the middle of three values.
  met = cold_start.summarize_k(1, empty_s=[9.0, 7.0, 8.0], warm_s=[4.0, 5.0, 4.5],
                               reference_s=[4.0, 6.0, 5.0])
  missed = cold_start.summarize_k(3, empty_s=[30.0, 31.0, 29.0], warm_s=[8.0, 7.0, 9.0],
                                  reference_s=[5.0, 5.0, 5.0])
  table = cold_start.format_cold_start(_record([met, missed]))
  for row, verdict in ((met, "met"), (missed, "missed")):
    empty, warm, ref = (statistics.median(row[f"{side}_s"])
                        for side in ("empty", "warm", "reference"))
    assert row["warm_over_reference"] == pytest.approx(warm / ref)
    assert row["empty_over_reference"] == pytest.approx(empty / ref)
    assert (f"| {row['k']} | {empty:.2f} | {warm:.2f} | {ref:.2f} "
            f"| {warm / ref:.2f} ({verdict}) | {empty / ref:.2f} ({verdict}) |") in table
    assert (warm / ref <= cold_start.WARM_GOAL) == (verdict == "met")
    assert (empty / ref <= cold_start.EMPTY_GOAL) == (verdict == "met")
  assert f"warm cache <= {cold_start.WARM_GOAL:g}x" in table
  assert f"empty cache <= {cold_start.EMPTY_GOAL:g}x" in table


def test_without_a_reference_the_ratios_are_blank():
  row = cold_start.summarize_k(1, empty_s=[9.0], warm_s=[4.0], reference_s=[])
  assert row["reference_median_s"] is None and row["warm_over_reference"] is None
  assert "| 1 | 9.00 | 4.00 | - | - | - |" in cold_start.format_cold_start(_record([row]))


def test_reference_timed_ms_with_no_repeats_runs_the_call_once_untimed():
  torch = pytest.importorskip("torch")
  script = pathlib.Path(__file__).resolve().parents[1] / "experiments/reference_benchmark.py"
  spec = importlib.util.spec_from_file_location("reference_benchmark", script)
  reference_benchmark = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(reference_benchmark)
  calls = []
  result = reference_benchmark.timed_ms(lambda: calls.append(1), 0, torch.device("cpu"))
  assert calls == [1]
  assert result == {"run_ms": None, "times_ms": [], "peak_mib": None}
