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

.PHONY: setup demo test test-fast bench clean

$(BIN)/flywheel: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/flywheel

demo: setup
	$(BIN)/flywheel run --profile demo --home $(HOME_DIR)

test: setup
	$(BIN)/python -m pytest -q -rs

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not servers"

bench: setup
	$(BIN)/python bench/quality.py ../shared/datasets/cranfield

clean:
	rm -rf $(HOME_DIR) .pytest_cache
