#!/usr/bin/env bash
# The one-call GPU benchmark, in stages that each run under their own time limit (seconds),
# in this order (STAGES chooses and orders them; the defaults fit one 10-minute device call):
#   population   (POPULATION_S=150)  experiments/population_benchmark.py: ResNet-20 and VGG-16
#                at CIFAR shapes, batch 128 per member, `vmap` populations of P = 1..32 against
#                one run alone -> population.txt, population.json
#   time_to_mask (TIME_TO_MASK_S=170) experiments/time_to_mask_benchmark.py on ResNet-20 at
#                batch 128: compile and run time of full ProsPr, unrolled and scanned, k = 1,
#                3, 10, and scanned k = 30, 100 -> time_to_mask.txt, time_to_mask.json (a list
#                of the two records)
#   cost         (COST_S=240) experiments/gpu_benchmark.py: the paper's settings at batch 128
#                and 256, k = 1, 3, 10, without and with remat, beside the authors' PyTorch
#                ProsPr on the same GPU -> benchmark_gpu.txt, benchmark_gpu.json,
#                reference.jsonl
# A stage killed at its limit keeps what it wrote; run.log has every stage's output. At most
# 8 files come back from a device call: these are 8 with run.log.
#
#   OUT=/tmp/gpu bash scripts/gpu_benchmark.sh
#   SMOKE=1 OUT=/tmp/smoke bash scripts/gpu_benchmark.sh   # tiny settings of every stage (CPU too)
#
# Needs python3 with jax, flax, optax, orbax, absl (no TensorFlow, tfds or ml-collections) and,
# for the reference, torch + torchvision and the authors' files in third_party_ref/ (see
# experiments/reference_benchmark.py). PYTHON and TORCH_PYTHON choose the interpreters.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
STAGES=${STAGES:-population time_to_mask cost}
SMOKE=${SMOKE:-0}

population() {
  local args=(--models=resnet20_prospr,vgg16_prospr --image_shape=32,32,3 --formulations=vmap
              --sizes=1,4,8,16,32 --repeats=3)
  [ "$SMOKE" = 1 ] && args=(--smoke --image_shape=32,32,3 --formulations=vmap)
  "$PYTHON" experiments/population_benchmark.py "${args[@]}" --output="$OUT/population.json" \
    > "$OUT/population.txt"
}

time_to_mask() {
  local args=(--model=resnet20_prospr --input_shape=32,32,3 --batch_size=128 --repeats=3)
  local short=(--ks=1,3,10 --unrolls=True,1) long=(--ks=30,100 --unrolls=1)
  if [ "$SMOKE" = 1 ]; then
    args=(--model=lenet300100 --batch_size=8 --repeats=1); short=(--ks=1 --unrolls=True,1)
    long=(--ks=2 --unrolls=1)
  fi
  local parts=("$OUT/time_to_mask_short.json" "$OUT/time_to_mask_long.json")
  { "$PYTHON" experiments/time_to_mask_benchmark.py "${args[@]}" "${short[@]}" \
      --output="${parts[0]}" &&
    "$PYTHON" experiments/time_to_mask_benchmark.py "${args[@]}" "${long[@]}" \
      --output="${parts[1]}"; } > "$OUT/time_to_mask.txt"
  local status=$?
  # One file for both records (a device call brings back at most 8).
  "$PYTHON" -c 'import json, sys; json.dump([json.load(open(p)) for p in sys.argv[2:]],
                                           open(sys.argv[1], "w"), indent=1)' \
    "$OUT/time_to_mask.json" "${parts[@]}" 2>/dev/null && rm -f "${parts[@]}"
  return "$status"
}

cost() {
  local args=(--repeats=3)
  [ "$SMOKE" = 1 ] && args=(--repeats=1 --presets=cifar10_resnet20 --batch_sizes=8 --ks=1
                            --published_cpu=cifar10_resnet20:8:1)
  local work="$OUT/cost"  # its report and raw files; the ones that come back are moved up
  "$PYTHON" experiments/gpu_benchmark.py --output_dir="$work" --budget_s=$(( ${COST_S:-240} - 40 )) \
    --reference_budget_s=60 --torch_python="${TORCH_PYTHON:-$PYTHON}" "${args[@]}"
  local status=$?
  for f in benchmark_gpu.txt benchmark_gpu.json reference.jsonl; do
    [ -f "$work/$f" ] && mv "$work/$f" "$OUT/"
  done
  return "$status"
}

(nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | tee "$OUT/run.log"
git log -1 --format="commit %H" 2>/dev/null | tee -a "$OUT/run.log"
failed=0
for stage in $STAGES; do
  case "$stage" in
    population) limit=${POPULATION_S:-150} ;;
    time_to_mask) limit=${TIME_TO_MASK_S:-170} ;;
    cost) limit=${COST_S:-240} ;;
    *) echo "unknown stage $stage (population, time_to_mask, cost)" | tee -a "$OUT/run.log"
       exit 2 ;;
  esac
  echo "== $stage (limit $limit s) $(date -u +%T)" | tee -a "$OUT/run.log"
  ( export -f population time_to_mask cost; export OUT PYTHON SMOKE COST_S
    timeout --signal=KILL "$limit" bash -c "$stage" ) >> "$OUT/run.log" 2>&1
  status=$?
  [ "$status" = 137 ] && echo "$stage killed at its limit of $limit s" | tee -a "$OUT/run.log"
  [ "$status" != 0 ] && failed=1
  echo "== $stage ended with status $status $(date -u +%T)" | tee -a "$OUT/run.log"
done
rm -rf "$OUT/cost"
exit "$failed"
