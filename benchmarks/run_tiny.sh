#!/usr/bin/env bash
# The small transformers models (ViT, ConvNeXt, ResNet), pretrained here on synthetic shapes (cached on the first
# call), fine-tuned on the atypical targets (digits, textures) and the in-domain control (shapes_ctrl):
# standard vs reinit_layers (k 1, 2) vs selective grad_x_weight (p 0.01, 0.05), backbone lr {1e-4, 3e-4, 1e-3},
# head lr 1e-3, 8 epochs, 3 seeds, one torch thread. Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/hf-plasticity bench --models resnet_tiny convnext_tiny vit_tiny --targets digits textures shapes_ctrl \
  --arms standard reinit_layers_k1 reinit_layers_k2 selective_gxw_p0.01 selective_gxw_p0.05 \
  --backbone-lrs 1e-4 3e-4 1e-3 --seeds 3 --epochs 8 --threads 1 --output bench_runs/tiny "$@"
