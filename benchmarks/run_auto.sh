#!/usr/bin/env bash
# The "auto" strategy on EfficientNet-Lite0 (ImageNet weights): digits, textures and the in-domain control photos,
# backbone lr 1e-4 (the fixed recipe) then 1e-3, head lr 1e-3, 8 epochs, 3 seeds, one torch thread; then the last-two-
# blocks arm at 3e-4 on digits (the one cell of the digits grid still missing). Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--models efficientnet_lite0 --seeds 3 --epochs 8 --threads 1 --output bench_runs/full --no-progress)
export HF_HUB_OFFLINE=1
for lr in 1e-4 1e-3; do
  .venv/bin/hf-plasticity bench "${COMMON[@]}" --targets digits textures photos --backbone-lrs "$lr" --arms auto "$@"
done
.venv/bin/hf-plasticity bench "${COMMON[@]}" --targets digits --backbone-lrs 3e-4 --arms reinit_layers_k2 "$@"
