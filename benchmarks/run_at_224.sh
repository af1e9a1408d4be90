#!/usr/bin/env bash
# Issue 27, point 6: does the recipe's rule hold at the resolution the ImageNet EfficientNet-Lite weights were trained
# for? Version 3's comparison (the tuned standard arm, LP-FT, the recipe, its held-out rule, standard at its fixed
# default) on EfficientNet-Lite0 at 224 px, on two atypical targets (textures, spectrograms), short budget, SEEDS
# confirmation seeds, on one GPU with deterministic algorithms, into a folder of its own (RESULTS): its regrets are
# never pooled with the 48 px ones. The fixed default and the held-out rule are version 3's (fitted at 48 px on the
# version-2 records): what a user would carry to the higher resolution.
# First, one run twice: whether this machine repeats a run bit for bit (printed; the folder's runs are comparable
# only if it does). Resumable: rerun to continue. DEADLINE seconds at most for the study (default 480).
# Usage (a GPU machine with the project's environment): RESULTS=$OUT/v3_224 bash benchmarks/run_at_224.sh
#   DEVICE=cpu SIZE=48 SEEDS=1 ARMS="standard recipe" EXTRA="--max-train 60 --max-test 30": a smoke run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/v3_224}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
SEEDS=${SEEDS:-3}
JOBS=${JOBS:-6}
DEADLINE=${DEADLINE:-480}
ARMS=${ARMS:-standard lp_ft recipe recipe_heldout standard_fixed}
EXTRA=${EXTRA:-}
PY=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
[ -f "$RESULTS/held_out.json" ] || cp benchmarks/results/v3/held_out.json "$RESULTS/"

DEVICE=$DEVICE SIZE=$SIZE "$PY" - <<'PY'
import os
from benchmarks import study
settings = study.StudySettings(models=[], targets=[], results="/nonexistent", device=os.environ["DEVICE"],
                               image_size=int(os.environ["SIZE"]), deterministic=True, max_train=128, max_test=64)
task = study.make_task(settings, "efficientnet_lite0", "textures", study.ARMS["standard"],
                       {"backbone_lr": 3e-3, "head_lr": 1e-3}, "short", "tune", 100)
first, second = study.run_one(task), study.run_one(task)
same = all(first[key] == second[key] for key in ("val_acc", "train_loss"))
print(f"one run twice on {os.environ['DEVICE']} at {os.environ['SIZE']} px: "
      f"{'identical' if same else 'DIFFERENT'} ({first['val_acc'][-1]:.4f} / {second['val_acc'][-1]:.4f}), "
      f"{first['wall_seconds']:.1f} s per run")
PY

# shellcheck disable=SC2086  # ARMS and EXTRA are lists of words
timeout --signal=INT --kill-after=30 "$DEADLINE" "$PY" -m benchmarks study --results "$RESULTS" --protocol v3 \
  --device "$DEVICE" --deterministic --image-size "$SIZE" --jobs "$JOBS" --confirmation-seeds "$SEEDS" \
  --models efficientnet_lite0 --targets textures spectrograms --budgets short --arms $ARMS $EXTRA ||
  echo "the study stopped at its deadline or failed (resumable: rerun)"
"$PY" -m benchmarks regret "$RESULTS" --seeds "$SEEDS" --plot "$RESULTS/regret.png"
