#!/usr/bin/env bash
# The CPU side-by-side benchmark, prospr_jax beside the authors' code, for a quiet machine:
# first the authors' PyTorch ProsPr (experiments/reference_benchmark.py with THREADS torch
# threads) on CIFAR ResNet-20 and on SmallConvNet (28x28x1) at batch 128 -- one masked training
# step, full and first-order ProsPr at k = 3 --, then experiments/benchmark.py on the same two
# settings, one process each (its own ratios, the remat memory table for SmallConvNet, and the
# reference's times beside its own, with the targets). The two sides never run at the same
# time. Writes to a scratch folder, then copies into OUT (docs/data/) at the end, so that the
# benchmark's record of the git tree it ran on (clean or "with local changes") is not spoiled
# by its own half-written outputs:
#   benchmark_cpu.txt (both settings' tables and targets), benchmark_cpu_resnet20.json and
#   benchmark_cpu.json (SmallConvNet), benchmark_cpu_reference.jsonl (the reference's raw
#   records) and benchmark_cpu_reference.log.
#
#   TORCH_PYTHON=/work/torchvenv/bin/python bash scripts/cpu_benchmark.sh
#   SMOKE=1 OUT=/tmp/cpu_smoke TORCH_PYTHON=... bash scripts/cpu_benchmark.sh  # batch 8, 1 run
#
# PYTHON runs prospr_jax (default .venv/bin/python), TORCH_PYTHON the reference (torch and
# torchvision); REF_DIR holds the authors' files (see experiments/reference_benchmark.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/data}
PYTHON=${PYTHON:-.venv/bin/python}
TORCH_PYTHON=${TORCH_PYTHON:-python3}
REF_DIR=${REF_DIR:-third_party_ref}
THREADS=${THREADS:-2}
BATCH=128 REPEATS=5 MEMORY_KS=${MEMORY_KS-1,3,10,30}
if [ "${SMOKE:-0}" = 1 ]; then
  BATCH=8 REPEATS=1 MEMORY_KS=1,3
fi
mkdir -p "$OUT"
FINAL_OUT=$OUT
OUT=$(mktemp -d)
plan="$OUT/plan.json"
trap 'rm -rf "$OUT"' EXIT
"$PYTHON" - "$BATCH" > "$plan" <<'EOF'
import json, sys
kinds = [{"kind": "train_step"},
         {"kind": "prospr", "method": "full", "k": 3, "published": True},
         {"kind": "prospr", "method": "first_order", "k": 3, "published": True}]
settings = [("resnet20_prospr", [32, 32, 3]), ("small_convnet", [28, 28, 1])]
json.dump([{"model": model, "num_classes": 10, "input_shape": shape,
            "batch_size": int(sys.argv[1]), **kind} for model, shape in settings for kind in kinds],
          sys.stdout)
EOF
echo "reference: $TORCH_PYTHON experiments/reference_benchmark.py, $THREADS threads, batch $BATCH"
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS "$TORCH_PYTHON" \
  experiments/reference_benchmark.py --plan="$plan" \
  --output="$OUT/benchmark_cpu_reference.jsonl" --ref_dir="$REF_DIR" --repeats="$REPEATS" \
  --threads="$THREADS" > "$OUT/benchmark_cpu_reference.log" 2>&1
echo "prospr_jax: experiments/benchmark.py"
# ResNet-20 without the memory table (compiling ResNet-20's k = 30 meta-gradient without remat
# alone takes minutes here); SmallConvNet with it, as in every earlier benchmark_cpu.*.
bench() {
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" experiments/benchmark.py \
    --batch_size="$BATCH" --repeats="$REPEATS" \
    --reference="$OUT/benchmark_cpu_reference.jsonl" "$@"
}
bench --preset=cifar10_resnet20 --ks=3 --memory_ks= --output="$OUT/benchmark_cpu_resnet20.json" \
  | tee "$OUT/benchmark_cpu.txt"
bench --preset=fashion_mnist_small_convnet --ks=1,3,10 --memory_ks="$MEMORY_KS" \
  --output="$OUT/benchmark_cpu.json" | tee -a "$OUT/benchmark_cpu.txt"
rm "$plan"
cp "$OUT"/* "$FINAL_OUT"/
echo "wrote $FINAL_OUT/benchmark_cpu*"
