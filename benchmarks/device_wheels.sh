#!/usr/bin/env bash
# Downloads the wheels of benchmarks/device_requirements.txt (the packages a GPU machine of this workplace lacks) here,
# where pip reaches the package registry (that machine reaches nothing), into .device_wheels/ (ignored by git), for its
# Python 3.12. Carry the folder to the machine (device run's `carry`); benchmarks/device_packages.sh (sourced by the GPU
# scripts) installs them there when one is missing. About 20 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
"$PIP" download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --implementation cp -d .device_wheels -r benchmarks/device_requirements.txt
ls -la .device_wheels
