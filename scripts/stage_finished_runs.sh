#!/bin/bash
# Stages (git add) the finished runs of a sweep directory, for committing a study as it goes:
#   bash scripts/stage_finished_runs.sh results/fashion_mnist_convnet_study
# A run is finished when its directory holds results.json; the directories of runs still in
# flight (config.json and masks.npz only) and populations/ (checkpoints) are left out, as are
# files outside the sweep directory. Also stages the sweep's all_results.{json,csv} and
# README.md when present. Prints how many runs are staged.
set -euo pipefail
SWEEP=$(realpath "${1:?usage: stage_finished_runs.sh <sweep directory>}")
cd "$SWEEP"
mapfile -t RUNS < <(find "$SWEEP" -name results.json -not -path "*/populations/*" -printf '%h\n' | sort)
for run in "${RUNS[@]}"; do git add -- "$run"; done
for f in all_results.json all_results.csv README.md; do
  if [[ -e "$SWEEP/$f" ]]; then git add -- "$SWEEP/$f"; fi
done
echo "${#RUNS[@]} finished runs under $SWEEP staged; in flight (not staged):" \
  "$(find "$SWEEP" -name config.json -not -path "*/populations/*" -printf '%h\n' | while read -r d; do [[ -e "$d/results.json" ]] || echo "$d"; done | wc -l)"
