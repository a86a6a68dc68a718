#!/bin/bash
# Runs (or resumes) the convnet study from a worktree pinned at the study's commit:
#   bash run_study.sh <worktree>
# Every sweep skips finished runs; the order is the one results/.../README.md gives.
set -euo pipefail
WORKTREE=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
cd "$WORKTREE"
export PYTHONPATH=$WORKTREE
study() { "$PY" -c "from configs import study_fashion_mnist_convnet as s; print(','.join(map(str, s.$1)))"; }
SWEEP=("$PY" experiments/sweep.py --config=configs/study_fashion_mnist_convnet.py
       --workdir="$ROOT" --population_size=8)
SEEDS=$(study SEEDS)
CONVERGENCE=dense+x2,$(study CONVERGENCE_METHODS)
"${SWEEP[@]}" --methods="$CONVERGENCE" --sparsities="$(study CONVERGENCE_SPARSITIES)" \
    --seeds=0 --include_dense=false
"${SWEEP[@]}" --methods="$(study METHODS)" --sparsities="$(study SPARSITIES)" --seeds="$SEEDS"
"${SWEEP[@]}" --methods="$CONVERGENCE" --sparsities="$(study CONVERGENCE_SPARSITIES)" \
    --seeds="$SEEDS" --include_dense=false
"${SWEEP[@]}" --methods="$(study SANITY_METHODS)" --sparsities="$(study SANITY_SPARSITIES)" \
    --seeds="$SEEDS" --include_dense=false
echo "core tier complete"
"${SWEEP[@]}" --methods="$(study EXTENSION_METHODS)" --sparsities="$(study SPARSITIES)" \
    --seeds="$SEEDS" --include_dense=false
"${SWEEP[@]}" --methods="$(study SANITY_METHODS)" \
    --sparsities="$(study EXTENSION_SANITY_SPARSITIES)" --seeds="$SEEDS" --include_dense=false
echo "study complete"
