#!/usr/bin/env bash
# The benchmark, version 2 (docs/BENCHMARKS.md, "Benchmark v2"), in the issue's order of work: EfficientNet-Lite0 on
# the two atypical targets and its in-domain control, then the ViT, then the rest. Each call tunes every arm on
# validation (tuning seeds 100, 101), then confirms the chosen configurations on seeds 0-9; results are appended to
# benchmarks/results/v2/<model>__<target>.jsonl (commit them). Resumable: rerun to continue, finished runs are skipped.
# JOBS (default 2) worker processes with one torch thread each; BIN picks the environment (default .venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
JOBS=${JOBS:-2}
export HF_HUB_OFFLINE=1
study() { "$BIN/python" -m benchmarks study --jobs "$JOBS" "$@"; }
study --models efficientnet_lite0 --targets digits textures photos spectrograms --budgets short
study --models vit_tiny --targets digits textures spectrograms shapes_ctrl --budgets short
study --models convnext_tiny --targets digits textures --budgets short \
  --arms standard reinit_top reinit_top_scale_keep reinit_top_scale_0.1
study --models convnext_tiny resnet_tiny --targets digits textures spectrograms shapes_ctrl --budgets short
study --models efficientnet_lite1 --targets digits textures photos spectrograms --budgets short
study --models vit_tiny --targets digits textures --budgets long
# The long budget (3x the runs' cost) with the four arms that answer whether more epochs change the verdict.
LONG_ARMS="standard boost_top reinit_top auto"
study --models vit_tiny convnext_tiny resnet_tiny --targets digits textures spectrograms shapes_ctrl --budgets long \
  --arms $LONG_ARMS
study --models efficientnet_lite0 --targets digits textures photos --budgets long --arms $LONG_ARMS
"$BIN/python" -m benchmarks report --doc docs/BENCHMARKS.md
