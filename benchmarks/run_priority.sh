#!/usr/bin/env bash
# The priority measurement of issue 7: EfficientNet-Lite0 (ImageNet weights) on digits at 48 px,
# standard vs reinit_layers (k 1, 2) vs selective grad_x_weight (p 0.01, 0.05) at backbone lr {1e-4, 3e-4, 1e-3},
# plus two eval-only controls (BN statistics re-estimated after the restore: standard_adabn, reinit_layers_k1_bnfix),
# head lr 1e-3, 8 epochs, 3 seeds, one torch thread. Resumable: rerun to continue.
# Calls in order of priority (finished runs are skipped): the key arms at the fixed recipe (backbone lr 1e-4) for
# every seed, then at lr 1e-3, then the whole grid with every arm.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--models efficientnet_lite0 --targets digits --seeds 3 --epochs 8 --threads 1 --output bench_runs/full)
KEY=(standard reinit_layers_k1 selective_gxw_p0.05)
export HF_HUB_OFFLINE=1
.venv/bin/hf-plasticity bench "${COMMON[@]}" "$@" --backbone-lrs 1e-4 --arms "${KEY[@]}"
.venv/bin/hf-plasticity bench "${COMMON[@]}" "$@" --backbone-lrs 1e-3 --arms "${KEY[@]}"
.venv/bin/hf-plasticity bench "${COMMON[@]}" "$@" --backbone-lrs 1e-4 3e-4 1e-3 \
  --arms "${KEY[@]}" selective_gxw_p0.01 reinit_layers_k2 standard_adabn reinit_layers_k1_bnfix
