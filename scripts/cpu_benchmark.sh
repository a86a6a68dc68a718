#!/usr/bin/env bash
# The CPU side-by-side benchmark of issue 11, for a quiet machine: first the authors' PyTorch
# ProsPr (scripts/reference_benchmark.py with THREADS torch threads) on CIFAR ResNet-20 and on
# SmallConvNet (28x28x1) at batch 128 -- one masked training step, full and first-order ProsPr
# at k = 3 --, then experiments/benchmark.py on the same two settings in one process (its own
# ratios, the remat memory table, and the reference's times beside its own, with the targets).
# The two sides never run at the same time. Writes to OUT (default docs/):
#   benchmark_cpu.txt (tables and targets), benchmark_cpu.json, benchmark_cpu_reference.jsonl
#   (the reference's raw records) and benchmark_cpu_reference.log.
#
#   TORCH_PYTHON=/work/torchvenv/bin/python bash scripts/cpu_benchmark.sh
#   SMOKE=1 OUT=/tmp/cpu_smoke TORCH_PYTHON=... bash scripts/cpu_benchmark.sh  # batch 8, 1 run
#
# PYTHON runs prospr_jax (default .venv/bin/python), TORCH_PYTHON the reference (torch and
# torchvision); REF_DIR holds the authors' files (see scripts/reference_benchmark.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs}
PYTHON=${PYTHON:-.venv/bin/python}
TORCH_PYTHON=${TORCH_PYTHON:-python3}
REF_DIR=${REF_DIR:-third_party_ref}
THREADS=${THREADS:-2}
BATCH=128 REPEATS=5 MEMORY_KS=1,3,10,30
if [ "${SMOKE:-0}" = 1 ]; then
  BATCH=8 REPEATS=1 MEMORY_KS=1,3
fi
mkdir -p "$OUT"
plan=$(mktemp --suffix=.json)
trap 'rm -f "$plan"' EXIT
"$PYTHON" - "$BATCH" > "$plan" <<'EOF'
import json, sys
kinds = [{"kind": "train_step"},
         {"kind": "prospr", "method": "full", "k": 3, "published": True},
         {"kind": "prospr", "method": "first_order", "k": 3, "published": True}]
settings = [("resnet20", [32, 32, 3]), ("small_convnet", [28, 28, 1])]
json.dump([{"model": model, "num_classes": 10, "input_shape": shape,
            "batch_size": int(sys.argv[1]), **kind} for model, shape in settings for kind in kinds],
          sys.stdout)
EOF
rm -f "$OUT/benchmark_cpu_reference.jsonl"
echo "reference: $TORCH_PYTHON scripts/reference_benchmark.py, $THREADS threads, batch $BATCH"
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS "$TORCH_PYTHON" scripts/reference_benchmark.py \
  --plan="$plan" --output="$OUT/benchmark_cpu_reference.jsonl" --ref_dir="$REF_DIR" \
  --repeats="$REPEATS" --threads="$THREADS" > "$OUT/benchmark_cpu_reference.log" 2>&1
echo "prospr_jax: experiments/benchmark.py"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" experiments/benchmark.py \
  --preset=cifar10_resnet20 --preset=fashion_mnist_small_convnet --batch_size="$BATCH" --ks=3 \
  --repeats="$REPEATS" --memory_ks="$MEMORY_KS" \
  --reference="$OUT/benchmark_cpu_reference.jsonl" --output="$OUT/benchmark_cpu.json" \
  | tee "$OUT/benchmark_cpu.txt"
