#!/usr/bin/env bash
# Pairs of the benchmark, version 2, on one GPU machine (16 cores): one chain of studies per argument, the chains side
# by side, each on its own (model, target) results files. A chain is study options, studies separated by ';', e.g.
#   "--models efficientnet_lite1 --targets photos --budgets short --jobs 6 ; --models efficientnet_lite0 ..."
# (--device cuda: the data and every random draw stay on the CPU, the model trains on the GPU). Each chain stops after
# DEADLINE seconds; a study is resumable, so a later call continues where this one stopped. Results go to RESULTS
# (default benchmarks/results/v2): merge them into the committed files (a run is never in two files) only for pairs
# whose runs share a pretrained source: the small models' sources are pretrained on the machine, and the report refuses
# a file of two sources (benchmarks/source_identity.py); EfficientNet's published weights are the same everywhere.
# A new RESULTS folder takes version 3's protocol (benchmarks/study.py, PROTOCOLS): runs meant for the version-2
# files need "--protocol v2" in every study's options.
# Usage: RESULTS=/some/folder DEADLINE=420 bash benchmarks/run_study_device.sh CHAIN... (DEVICE=cpu: the same on the CPU)
# The machine needs the wheels of benchmarks/device_wheels.sh carried along (.device_wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/v2}
DEADLINE=${DEADLINE:-420}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 DEVICE
[ $# -gt 0 ] || { echo "give at least one chain of study options" >&2; exit 2; }
rm -rf /tmp/study_logs && mkdir -p "$RESULTS" /tmp/study_logs
# shellcheck source=benchmarks/device_packages.sh
source benchmarks/device_packages.sh  # DEVICE=cpu here: nothing to install

# One run of each restoring kind on the GPU first: a broken environment fails here, in seconds.
"$PY" - <<'EOF' || exit 1
import os
import torch
from benchmarks import study
device = os.environ["DEVICE"]
settings = study.StudySettings(models=[], targets=[], max_train=64, max_test=32, device=device, calibration_batches=2)
for arm in ("reinit_top", "auto", "dash"):
    knobs = {"backbone_lr": 1e-3, **({"lambda_min": 0.6} if arm == "dash" else {})}
    task = study.make_task(settings, "efficientnet_lite1", "digits", study.ARMS[arm], knobs, "short", "tune", 100)
    record = study.run_one(task)
    print(arm, "val", record["val_acc"], "re-initialized", record["reinitialized"], f"{record['wall_seconds']:.1f} s")
print(torch.cuda.get_device_name() if device != "cpu" else "cpu")
EOF

study() {  # one chain of studies, stopped at the deadline
  local log=$1
  shift
  timeout --signal=INT --kill-after=40 "$DEADLINE" bash -c "$*" >"/tmp/study_logs/$log.log" 2>&1
}
S="$PY -m benchmarks study --device $DEVICE --results $RESULTS"
chain=0
for spec in "$@"; do
  IFS=';' read -ra studies <<<"$spec"
  command=""
  for options in "${studies[@]}"; do command+="${command:+ && }$S $options"; done
  study "chain$chain" "$command" &
  chain=$((chain + 1))
done
wait
for log in /tmp/study_logs/*.log; do
  echo "== $log"
  tail -c 400 "$log" | tr '\r' '\n' | tail -n 3
done
wc -l "$RESULTS"/*.jsonl
