"""What a person watching a run reads: progress lines, durations, the final summary."""

import io
import logging

import pytest

from prospr_jax.experiment import progress


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (42, "42s"), (185, "3m 05s"),
                                           (7620, "2h 07m")])
def test_format_duration(seconds, text):
  assert progress.format_duration(seconds) == text


def test_progress_lines_give_epoch_rate_and_time_left():
  now = [100.0]
  meter = progress.Progress(first_step=0, total_steps=300, steps_per_epoch=100,
                            clock=lambda: now[0])
  now[0] = 120.0  # the first 50 steps, compilation included: 2.5 steps/s
  assert meter.line(50, 1.23456) == (
      "epoch 1/3  step 50/300  loss 1.2346  2.5 steps/s  1m 40s left", 2.5)
  now[0] = 125.0  # then 10 steps/s; 200 steps left at the pace since step 50: 10/s
  assert meter.line(100, 0.5)[0] == "epoch 1/3  step 100/300  loss 0.5000  10.0 steps/s  20s left"
  now[0] = 156.0  # an evaluation makes the interval slow: 50 steps in 31 s
  line, rate = meter.line(150, 0.4)
  assert line.startswith("epoch 2/3  step 150/300") and rate == pytest.approx(50 / 31)
  assert line.endswith("54s left")  # 150 steps at the pace since step 50: 100 steps in 36 s


def test_a_resumed_run_counts_from_its_first_step():
  now = [0.0]
  meter = progress.Progress(first_step=200, total_steps=300, steps_per_epoch=100,
                            clock=lambda: now[0])
  now[0] = 10.0
  assert meter.line(300, 0.1)[0] == "epoch 3/3  step 300/300  loss 0.1000  10.0 steps/s  0s left"


def test_summary_says_what_ran_how_well_and_where_the_results_are():
  results = {"config": {"prune": {"method": "prospr", "structured": False}},
             "density": {"density/total": 0.02}, "history": [{}, {}, {}],
             "final_test_top1": 0.8166, "best_test_top1": 0.8201,
             "prune_seconds": 3.2, "train_seconds": 241.0}
  assert progress.summary(results, "workdirs/default").splitlines() == [
      "prospr: 2.00% of the prunable weights kept (sparsity 0.98)",
      "test top-1 81.66% after 3 epochs (best 82.01%)",
      "pruning 3s, training 4m 01s",
      "results: workdirs/default/results.json (masks.npz, checkpoints/, tensorboard/ beside it)",
  ]


def test_show_on_prints_the_library_lines_without_absl():
  stream = io.StringIO()
  progress.show_on(stream)
  try:
    logging.getLogger("prospr_jax.experiment.train").info("step %d", 5)
    logging.getLogger("orbax").info("not shown here")
  finally:
    logger = logging.getLogger(progress.LOGGER)
    logger.handlers, logger.propagate = [], True
    logger.setLevel(logging.NOTSET)
  lines = stream.getvalue().splitlines()
  assert len(lines) == 1 and lines[0].endswith(" step 5")
