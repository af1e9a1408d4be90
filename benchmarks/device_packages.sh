#!/usr/bin/env bash
# Sourced by the GPU scripts (run_at_224.sh, run_study_device.sh): installs the packages of
# benchmarks/device_requirements.txt (those a GPU machine of this workplace lacks) from the wheels carried in WHEELS
# (default .device_wheels, made here by benchmarks/device_wheels.sh) when one of them is missing; stops with what to do
# when they are missing and no wheels came along. Expects PY (the machine's python).
WHEELS=${WHEELS:-.device_wheels}
DEVICE_REQUIREMENTS=benchmarks/device_requirements.txt
if ! "$PY" -c 'import sys, importlib.metadata as m
[m.version(line.split("==")[0]) for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]' \
  "$DEVICE_REQUIREMENTS" 2>/dev/null; then
  if [ ! -d "$WHEELS" ]; then
    echo "missing packages of $DEVICE_REQUIREMENTS and no $WHEELS:" \
      "run benchmarks/device_wheels.sh where pip reaches the registry, and carry the folder" >&2
    exit 2
  fi
  "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
fi
