#!/usr/bin/env bash
# EfficientNet-Lite0 (ImageNet weights) on the second atypical target (textures) and the in-domain control (photos):
# standard vs reinit_layers (k 1, 2), backbone lr 1e-4 (the fixed recipe) then 1e-3 then 3e-4, head lr 1e-3, 8 epochs,
# 3 seeds, one torch thread. Usage: benchmarks/run_effnet_targets.sh textures|photos [extra bench args].
# Resumable: rerun to continue. Two calls (one per target) use the two cores of the reference machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: $0 textures|photos [bench args]}
shift
COMMON=(--models efficientnet_lite0 --targets "$TARGET" --seeds 3 --epochs 8 --threads 1 --output bench_runs/full)
ARMS=(standard reinit_layers_k1 reinit_layers_k2)
export HF_HUB_OFFLINE=1
for lr in 1e-4 1e-3 3e-4; do
  .venv/bin/hf-plasticity bench "${COMMON[@]}" --backbone-lrs "$lr" --arms "${ARMS[@]}" --no-progress "$@"
done
