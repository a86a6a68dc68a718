#!/usr/bin/env bash
# The convnet study's ResNet-20 arms on one lent GPU, in one device call (population training).
#
#   bash scripts/gpu_study.sh stage
#       here: copies what the device lacks into .gpu_carry/ (git-ignored): ml-collections
#       (from .venv), the Fashion-MNIST IDX files (from $PROSPR_FASHION_MNIST_DIR or
#       /usr/share/datasets/fashion-mnist) and the commit of this checkout, which must be
#       clean (the copied tree has no .git; its runs record that commit, PROSPR_GIT_COMMIT).
#       Pass `carry: [".gpu_carry"]` to the device call; commit nothing in between.
#   OUT=<folder> bash scripts/gpu_study.sh run
#       there: experiments/sweep.py on configs/study_fashion_mnist_convnet.py with
#       --config.model=resnet20_prospr, the core methods of the study (METHODS below) and dense
#       at SPARSITIES (default 0.982,0.99: the paper's sparsest ResNet-20 setting and the
#       study's next density) for SEEDS (default 0), all in one population of up to
#       POPULATION_SIZE (default 16, vmapped), under a time limit of LIMIT_S seconds (default
#       540). Brings back, in $OUT: gpu_study.tar.gz (every run's config.json, masks.npz and
#       results.json, each results.json recording the device and the commit) and run.log.
#   SMOKE=1 OUT=<folder> bash scripts/gpu_study.sh run   # 5 steps of one seed (CPU too)
#
# A seed's 11 runs of 20 epochs fit one call on an H200 by estimate, not yet by measurement
# (ResNet-20's training step is latency-bound there: 7.7 ms at batch 128); the next seeds are
# later calls. Populations checkpoint themselves, but the checkpoints stay on the device: a
# call killed at its limit brings back only the runs it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
METHODS=${METHODS:-prospr,snip,synflow,force,random+erk}

stage() {
  local data=${PROSPR_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  local site
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "the checkout has uncommitted changes: commit them first (runs record the commit)" >&2
    return 1
  fi
  site=$(.venv/bin/python -c 'import ml_collections, os; print(os.path.dirname(os.path.dirname(ml_collections.__file__)))') || return 1
  rm -rf "$CARRY" && mkdir -p "$CARRY/python" "$CARRY/fashion-mnist"
  cp -r "$site/ml_collections" "$CARRY/python/" &&
    cp "$data"/*-ubyte.gz "$CARRY/fashion-mnist/" &&
    git rev-parse HEAD > "$CARRY/COMMIT" &&
    du -sh "$CARRY"
}

run() {
  : "${OUT:?set OUT to the output folder}"
  mkdir -p "$OUT"
  local work=/tmp/gpu_study
  export PYTHONPATH="$PWD:$PWD/$CARRY/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export PROSPR_FASHION_MNIST_DIR=${PROSPR_FASHION_MNIST_DIR:-$PWD/$CARRY/fashion-mnist}
  [ -f "$CARRY/COMMIT" ] && export PROSPR_GIT_COMMIT=$(cat "$CARRY/COMMIT")
  local args=(--config=configs/study_fashion_mnist_convnet.py --config.model=resnet20_prospr
              --workdir="$work" --methods="$METHODS" --sparsities="${SPARSITIES:-0.982,0.99}"
              --seeds="${SEEDS:-0}" --population_size="${POPULATION_SIZE:-16}")
  [ "${SMOKE:-0}" = 1 ] && args+=(--config.train.num_epochs=1 --config.train.steps_per_epoch=5
                                  --config.train.eval_every_epochs=1 --config.prune.num_rounds=2
                                  --config.prune.synflow_rounds=2)
  { (nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"); echo "commit ${PROSPR_GIT_COMMIT:-?}"; } \
    | tee "$OUT/run.log"
  timeout --signal=KILL "${LIMIT_S:-540}" "${PYTHON:-python3}" experiments/sweep.py "${args[@]}" \
    >> "$OUT/run.log" 2>&1
  local status=$?
  [ "$status" = 137 ] && echo "killed at LIMIT_S=${LIMIT_S:-540} s" | tee -a "$OUT/run.log"
  (cd "$work" 2>/dev/null && find . -name config.json -o -name masks.npz -o -name results.json \
     -o -name 'all_results.*' | tar czf "$OUT/gpu_study.tar.gz" -T -)
  tail -n 3 "$OUT/run.log"
  return "$status"
}

case "${1:-}" in
  stage|run) "$1" ;;
  *) echo "usage: bash scripts/gpu_study.sh stage|run" >&2; exit 2 ;;
esac
