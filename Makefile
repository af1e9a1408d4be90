# Set-up and checks from the repository's files alone. torch==2.13.0 goes in first (a local CPU wheel),
# so no dependency range can pull another torch build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]" -r benchmarks/requirements.txt  # the benchmark's own requirements

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check hf_plasticity tests examples benchmarks notebooks
	$(BIN)/ruff format --check hf_plasticity tests examples benchmarks notebooks
	$(BIN)/lint-imports

notebooks: setup  # write each notebooks/NN_name.ipynb from its jupytext source NN_name.py
	$(BIN)/python notebooks/sync.py

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks demo

clean:
	rm -rf $(VENV) build *.egg-info
