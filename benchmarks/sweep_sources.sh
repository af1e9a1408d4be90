#!/usr/bin/env bash
# The learning-rate sweep that chose each small model's source-pretraining lr (docs/BENCHMARKS.md, "Source
# pretraining"): short runs of the model's registered recipe (warmup + cosine decay over the short run), one seed,
# scored on the source's validation split (its test split is never read), one torch thread.
# 1. every model at lr 3e-4, 1e-3, 3e-3 for 15 epochs;
# 2. resnet_tiny's best was the largest value: 1e-2 too, to bracket it;
# 3. vit_tiny's two best were within noise of each other at 15 epochs: both again for 40 epochs.
# Resumable: rerun to continue (one JSON per model, lr and length in bench_runs/source_sweep; the table in sweep.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export HF_HUB_OFFLINE=1
COMMON=(--threads 1 --no-progress --output bench_runs/source_sweep)
sweep() { "$BIN/python" -m benchmarks sweep "${COMMON[@]}" "$@"; }
sweep --lrs 3e-4 1e-3 3e-3 --epochs 15 --models resnet_tiny convnext_tiny vit_tiny "$@"
sweep --lrs 1e-2 --epochs 15 --models resnet_tiny "$@"
sweep --lrs 3e-4 1e-3 --epochs 40 --models vit_tiny "$@"
