#!/usr/bin/env bash
# The one-shot GPU benchmark: prospr_jax on ResNet-20 and VGG-16 (CIFAR shapes) at
# batch 128 and 256, k = 1, 3, 10, without and with remat, beside the authors' PyTorch ProsPr
# on the same GPU (kept there, and its published full mode on the CPU for one setting).
# See experiments/gpu_benchmark.py. Nothing starts after BUDGET_S seconds and everything is
# killed at HARD_S; the results so far are in $OUT either way:
#   benchmark_gpu.txt (tables), benchmark_gpu.json, reference.jsonl, reference.log, run.log.
#
#   OUT=/tmp/gpu bash scripts/gpu_benchmark.sh
#   SMOKE=1 OUT=/tmp/smoke bash scripts/gpu_benchmark.sh   # ResNet-20, batch 8, k = 1 (CPU too)
#
# Needs python3 with jax, flax, optax, absl (no TensorFlow, tfds or ml-collections) and, for the
# reference, torch + torchvision and the authors' files in third_party_ref/ (see
# experiments/reference_benchmark.py). PYTHON and TORCH_PYTHON choose the interpreters.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-420}
HARD_S=${HARD_S:-470}
ARGS=(--repeats=3)
if [ "${SMOKE:-0}" = 1 ]; then
  ARGS=(--repeats=1 --presets=cifar10_resnet20 --batch_sizes=8 --ks=1
        --published_cpu=cifar10_resnet20:8:1)
fi
(nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | tee "$OUT/run.log"
timeout --signal=KILL "$HARD_S" "$PYTHON" experiments/gpu_benchmark.py --output_dir="$OUT" \
  --budget_s="$BUDGET_S" --torch_python="${TORCH_PYTHON:-$PYTHON}" "${ARGS[@]}" 2>&1 \
  | tee -a "$OUT/run.log"
status=${PIPESTATUS[0]}
if [ "$status" = 137 ]; then  # our own hard limit, told apart from the caller's (124/137)
  echo "killed at HARD_S=$HARD_S s: the results so far are in $OUT" | tee -a "$OUT/run.log"
  exit 3
fi
exit "$status"
