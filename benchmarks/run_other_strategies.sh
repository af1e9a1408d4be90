#!/usr/bin/env bash
# Every one-shot strategy against standard fine-tuning on the small ResNet pretrained on shapes (cheap: ~10 s a run):
# shrink & perturb (shrink 0.8, 0.6), ReDo (tau 0.1, 0.025), DASH, selective |w*g| (p 0.01, 0.05), on digits,
# textures and the in-domain control shapes_ctrl, backbone lr 1e-4 and 1e-3, head lr 1e-3, 8 epochs, 3 seeds.
# Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
for lr in 1e-4 1e-3; do
  .venv/bin/hf-plasticity bench --models resnet_tiny --targets digits textures shapes_ctrl \
    --arms standard shrink_perturb_0.8 shrink_perturb_0.6 redo_tau0.1 redo_tau0.025 dash selective_gxw_p0.01 \
    selective_gxw_p0.05 --backbone-lrs "$lr" --seeds 3 --epochs 8 --threads 1 --output bench_runs/tiny \
    --no-progress "$@"
done
