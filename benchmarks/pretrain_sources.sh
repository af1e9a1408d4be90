#!/usr/bin/env bash
# Source pretraining of the bench's small models (vit_tiny, convnext_tiny, resnet_tiny) on the synthetic `shapes`
# source, each with its registered recipe (benchmarks/models.py: PRETRAIN_RECIPES), one torch thread, one
# model after the other. Each model is cached (~/.cache/hf_plasticity/bench, or HF_PLASTICITY_BENCH_CACHE, or
# --cache-dir) with its curve, final source test accuracy and check; the last call writes the table, every curve
# (JSON) and the figure to bench_runs/source and exits 1 if a model is below the threshold.
# Resumable: rerun to continue (a cached model is skipped; an interrupted one resumes after its last finished epoch).
# Extra arguments go to every call (e.g. --cache-dir DIR). BIN picks the environment (default .venv/bin).
# Run from anywhere: it works in the repository root, where `python -m benchmarks` finds the package.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1
MODELS=(resnet_tiny convnext_tiny vit_tiny)
for model in "${MODELS[@]}"; do
  "$BIN/python" -m benchmarks pretrain --models "$model" --threads 1 --no-progress \
    --output "bench_runs/source/$model" "$@" || true
done
"$BIN/python" -m benchmarks pretrain --models "${MODELS[@]}" --threads 1 --no-progress \
  --output bench_runs/source "$@"
