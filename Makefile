# Two commands set everything up on a fresh machine (only Python 3.11+, Node.js 18+ with npm
# for the browser client, and the package registries needed):  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# The venv's tools (tarn, dvc, mlflow, uvicorn) must be on PATH for dvc stages and servers.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
# Debian packages some tests need (chromium: the in-browser client test, tests/e2e/test_browser.py;
# postgresql: the MLflow server on PostgreSQL, tests/e2e/test_shared_stack.py and others).
SYSTEM_PACKAGES := chromium postgresql

.PHONY: help venv lock lock-check client run repro test test-quick test-fast lint bench system-deps clean ui screenshots
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Dependencies are pinned with hashes in $(LOCK) (runtime + dev, every platform), compiled
# from pyproject.toml by `make lock`, and installed exactly by uv (`uv pip sync`). uv itself is
# installed from PyPI into $(UV_DIR) (outside the synced environment) when missing.
# Without uv:  pip install --no-deps --require-hashes -r requirements/dev.lock && pip install --no-deps -e .
LOCK := requirements/dev.lock
UV_VERSION := 0.13.9
UV_DIR := $(VENV)/.uv
UV_BIN := $(abspath $(UV_DIR))/bin/uv
UV ?= $(UV_BIN)
# sha256 of pyproject's dependency lists, recorded in the lock's first line by `make lock`
DEPS_HASH := $(PYTHON) -c 'import hashlib, json, tomllib; \
  p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
  print(hashlib.sha256(json.dumps([sorted(p["dependencies"]), \
  sorted(p["optional-dependencies"]["dev"]), sorted(p["optional-dependencies"]["bench"])]).encode()).hexdigest())'

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tarn needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(UV_BIN): | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --target $(UV_DIR) \
	  uv==$(UV_VERSION)

$(STAMP): $(LOCK) pyproject.toml | $(VENV)/bin/python $(UV)
	@$(MAKE) --no-print-directory lock-check
	$(UV) pip sync -q --python $(VENV)/bin/python --require-hashes $(LOCK)
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP) ## Create or update .venv with the project and its dev tools (from the lock)

lock: | $(UV) ## Re-pin requirements/dev.lock from pyproject.toml (UPGRADE=1: newest)
	$(UV) pip compile -q pyproject.toml --extra dev --extra bench --generate-hashes --universal \
	  --python-version 3.11 --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) \
	  -o $(LOCK)
	sed -i "1i # pyproject-deps-sha256: $$($(DEPS_HASH))" $(LOCK)

lock-check: ## Fail if pyproject.toml's dependencies changed since the lock was compiled
	@want=$$($(DEPS_HASH)); have=$$(sed -n 's/^# pyproject-deps-sha256: //p' $(LOCK)); \
	[ "$$want" = "$$have" ] || { echo "$(LOCK) is out of date with pyproject.toml's \
	dependencies: run \`make lock\` and commit it" >&2; exit 1; }

# The browser client's runtime: onnxruntime-web from the npm registry (pinned by
# web/package-lock.json), vendored at build time; the page loads nothing from a CDN. The wasm-only
# build needs its loader (.mjs) and binary (.wasm). Rebuilt only when web/package*.json change.
CLIENT_VENDOR := src/tarn/serve/client/vendor
CLIENT_STAMP := $(CLIENT_VENDOR)/.built
ORT_DIST := web/node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
$(CLIENT_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 18+) is needed to vendor onnxruntime-web \
	for the browser client: install Node.js, then rerun make" >&2; exit 1; }
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(CLIENT_VENDOR) && mkdir -p $(CLIENT_VENDOR)
	cp $(addprefix $(ORT_DIST)/,$(ORT_FILES)) $(CLIENT_VENDOR)/
	node -p "'onnxruntime-web ' + require('./web/node_modules/onnxruntime-web/package.json').version" > $@

client: $(CLIENT_STAMP) ## Vendor onnxruntime-web (npm) into the browser client (served at /client)

run: venv client ## Seed the lake if empty, then run the whole pipeline (dvc repro)
	tarn lake seed --if-empty
	dvc repro

repro: venv ## dvc repro only
	dvc repro

# The tests start many Python processes (tarn serve, tarn stages under dvc, mlflow server, dask
# workers), each importing MLflow, scikit-learn, pandas... Where PYTHONDONTWRITEBYTECODE is set
# (as in many containers) Python caches no bytecode, so each one compiled those from source
# again (~2.5 s of CPU for `import tarn.serve.app` alone). The venv's bytecode is compiled once
# into PYCACHE, which the test targets point every process at (reading it needs no writing).
PYCACHE := $(abspath $(VENV))/.pycache
$(PYCACHE)/.stamp: $(STAMP)
	@echo "compiling the venv's bytecode into $(PYCACHE) (once)"
	-@PYTHONPYCACHEPREFIX=$(PYCACHE) $(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib \
	  >/dev/null 2>&1  # a few files in packages are not Python 3.11: they stay uncompiled
	touch $@

test test-quick: export PYTHONPYCACHEPREFIX := $(PYCACHE)
# make test runs on TEST_WORKERS processes (pytest-xdist), a whole test module per worker at a time
# (--dist loadfile: module fixtures such as a served project are built once). Most tests wait on
# subprocesses, servers and fits of one core, so two workers on two cores roughly halve the wall
# time; more workers than cores only add memory. TEST_WORKERS=0 runs in this one process.
TEST_WORKERS ?= 2
test: venv client lint $(PYCACHE)/.stamp ## Run every test (ruff, then unit, integration, e2e): what CI runs
	pytest -n $(TEST_WORKERS) --dist loadfile --durations=15  # the slowest tests, printed every run

test-quick: venv lint $(PYCACHE)/.stamp ## The edit loop: ruff + unit tests + fast integration tests (under 2 min)
	pytest tests/unit tests/integration -m "not slow" -q

test-fast: test-quick

UI_PORT ?= 5000
ui: venv ## The MLflow UI on http://127.0.0.1:5000 (another port: make ui UI_PORT=5001)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 --host 127.0.0.1 \
	  --port $(UI_PORT) \
	  --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/.mlflow/mlflow.db}"

screenshots: venv ## Refresh docs/img: the MLflow UI and the reports, in headless chromium
	TARN_SCREENSHOTS=docs/img pytest tests/e2e/test_mlflow_ui.py -q

lint: venv ## ruff
	ruff check src tests bench

bench: venv ## Benchmarks (ratios against a baseline measured in the same run)
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/*.py; do echo "== $$b"; python $$b || exit 1; done || echo "no benchmarks yet"

system-deps: ## Install the Debian packages tests need (CI calls this before make test)
	@if [ -n "$(SYSTEM_PACKAGES)" ]; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "no system packages needed"; fi

clean: ## Remove generated data, reports and the venv
	rm -rf $(VENV) data/snapshot data/curated data/prepared reports/*.json reports/*.html \
	  web/node_modules $(CLIENT_VENDOR)
