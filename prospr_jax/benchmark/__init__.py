"""Benchmarks of prospr_jax: the measurements behind experiments/'s benchmark binaries.

Harness-level: it imports the library and `prospr_jax.experiment`; the library never imports
it. Shared by every suite:

  timing            compile time, interleaved median run time, compiled memory
  result_record     the one JSON result shape, stamped with the code version and the device
  synthetic_setup   a fresh zoo model with random batches; the paper's presets
  cost_cases        the timed functions: training steps, full/first-order ProsPr, SNIP
  setting_flags     the --model/--input_shape/--batch_size/--repeats/--output flags

One module (or two: measurements, then the printout) per suite:

  cost_suite, cost_report, reference_comparison   ProsPr's cost vs a training step
                                                  (experiments/benchmark.py)
  gpu_suite, gpu_report        the paper's settings beside the authors' code on one accelerator
                               (experiments/gpu_benchmark.py)
  parallel_suite               data-parallel throughput (experiments/parallel_benchmark.py)
  compaction_suite             channel pruning after compaction
                               (experiments/compaction_benchmark.py)
  conv_variants, conv_ablation `conv_ops` against its earlier variants
                               (experiments/conv_ops_ablation.py)
  score_precision              float32 vs float64 scores per conv variant
                               (experiments/score_precision_check.py)
  cpu_op_profile               XLA:CPU time per kind of op (experiments/profile_cpu_ops.py)
  remat_live_buffers           buffers live at remat ProsPr's memory peak
                               (experiments/remat_memory_report.py)
  time_to_mask                 ProsPr's compile and run time per inner-loop form (unrolled or
                               scan) and k (experiments/time_to_mask_benchmark.py)
  cold_start                   prune_and_train.py's seconds from process start to its mask,
                               empty and warm compilation cache, beside the authors' code
                               (experiments/cold_start_benchmark.py)

The authors' PyTorch code is timed by experiments/reference_benchmark.py, which is not part of
this package: it runs under a Python with torch and without jax, and importing any module of
`prospr_jax` imports jax.
"""
