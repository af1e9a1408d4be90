#!/usr/bin/env bash
# Issue 27, point 6: does the recipe's rule hold at the resolution the ImageNet EfficientNet-Lite weights were trained
# for? Version 3's comparison (the tuned standard arm, LP-FT, the recipe, its held-out rule, standard at its fixed
# default) on EfficientNet-Lite0 at 224 px, on two atypical targets (textures, spectrograms), short budget, SEEDS
# confirmation seeds, on one GPU with deterministic algorithms, into a folder of its own (RESULTS): its regrets are
# never pooled with the 48 px ones. The fixed default and the held-out rule are version 3's (fitted at 48 px on the
# version-2 records): what a user would carry to the higher resolution.
# First, one configuration trained in two processes: whether this machine repeats a run bit for bit (printed; the
# folder's paired differences mean something only if it does). Resumable: rerun to continue. The study stops after
# DEADLINE seconds (default 480). Missing packages are installed from WHEELS (benchmarks/device_wheels.sh makes it).
# Usage (a GPU machine; carry .device_wheels): RESULTS=$OUT/v3_224 bash benchmarks/run_at_224.sh
#   DEVICE=cpu SIZE=32 SEEDS=2 ARMS="standard recipe" EXTRA="--max-train 40 --max-test 20": a smoke run on the CPU.
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
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 DEVICE SIZE
# shellcheck source=benchmarks/device_packages.sh
source benchmarks/device_packages.sh
mkdir -p "$RESULTS"
[ -f "$RESULTS/held_out.json" ] || cp benchmarks/results/v3/held_out.json "$RESULTS/"

repeat_one_run() {  # one configuration, in a process of its own: its validation curve and training loss as JSON
  "$PY" - <<'PY'
import json, os
from benchmarks import study
settings = study.StudySettings(models=[], targets=[], results="/nonexistent", device=os.environ["DEVICE"],
                               image_size=int(os.environ["SIZE"]), deterministic=True, max_train=128, max_test=64)
task = study.make_task(settings, "efficientnet_lite0", "textures", study.ARMS["standard"],
                       {"backbone_lr": 3e-3, "head_lr": 1e-3}, "short", "tune", 100)
record = study.run_one(task)
print(json.dumps({"val_acc": record["val_acc"], "train_loss": record["train_loss"], "seconds": record["wall_seconds"]}))
PY
}
first=$(repeat_one_run | tail -n 1)
second=$(repeat_one_run | tail -n 1)
same="import json, sys; a, b = (json.loads(x) for x in sys.argv[1:]); sys.exit(a['val_acc'] != b['val_acc'] or \
a['train_loss'] != b['train_loss'])"
if "$PY" -c "$same" "$first" "$second"; then
  echo "one run in two processes on $DEVICE at $SIZE px: identical ($first)"
else
  echo "WARNING: one run in two processes on $DEVICE at $SIZE px: DIFFERENT ($first / $second): paired differences" \
    "of this folder carry the device's noise" | tee "$RESULTS/NOT_DETERMINISTIC"
fi

rc=0
# shellcheck disable=SC2086  # ARMS and EXTRA are lists of words
timeout --signal=INT --kill-after=30 "$DEADLINE" "$PY" -m benchmarks study --results "$RESULTS" --protocol v3 \
  --device "$DEVICE" --deterministic --image-size "$SIZE" --jobs "$JOBS" --confirmation-seeds "$SEEDS" \
  --models efficientnet_lite0 --targets textures spectrograms --budgets short --arms $ARMS $EXTRA || rc=$?
case $rc in
  0) ;;
  124 | 130) echo "the study stopped at its deadline (resumable: rerun)" ;;
  *) exit "$rc" ;;
esac
"$PY" -m benchmarks regret "$RESULTS" --seeds "$SEEDS" --plot "$RESULTS/regret.png"
