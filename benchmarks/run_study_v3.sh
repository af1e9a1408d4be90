#!/usr/bin/env bash
# The study's version-3 settings (docs/BENCHMARKS.md, "Study settings for the recipe confirmation (v3)"): the pairs of
# version 2 in its order of work, into a new folder, benchmarks/results/v3, whose study.json fixes the protocol (ties on
# validation broken by a third tuning seed, 102, then a hash of the configuration; 30% of each class for validation;
# paired differences only between runs on one device), with the LP-FT arm, the recipe arm (recommend_recipe's rates,
# not tuned: its test regret against the tuned standard arm), the recipe with its rule refitted without the pair
# (recipe_heldout) and every arm at its best fixed default (<arm>_fixed), both read from held_out.json (written by
# python -m benchmarks.held_out from the v2 tuning records). Resumable: rerun to continue.
# JOBS (default 2) worker processes with one torch thread each; BIN picks the environment (default .venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
JOBS=${JOBS:-2}
RESULTS=${RESULTS:-benchmarks/results/v3}
export HF_HUB_OFFLINE=1
study() { "$BIN/python" -m benchmarks study --results "$RESULTS" --protocol v3 --jobs "$JOBS" "$@"; }
# Version 3's arms (study.V3_ARMS): the tuned standard arm, LP-FT, the recipe and its held-out rule, every arm at its
# best fixed default (the long budget has fixed defaults only for the arms version 2 ran there). The pairs are version
# 2's: all 20 on the short budget, and on the long one the 16 of the small models and EfficientNet-Lite0.
study --models efficientnet_lite0 --targets digits textures photos spectrograms --budgets short
study --models vit_tiny convnext_tiny resnet_tiny --targets digits textures spectrograms shapes_ctrl --budgets short
study --models efficientnet_lite1 --targets digits textures photos spectrograms --budgets short
study --models vit_tiny convnext_tiny resnet_tiny --targets digits textures spectrograms shapes_ctrl --budgets long
study --models efficientnet_lite0 --targets digits textures photos spectrograms --budgets long
"$BIN/python" -m benchmarks report "$RESULTS"
