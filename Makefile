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

.PHONY: help venv client run repro test test-fast lint bench system-deps clean ui
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tarn needs Python 3.11+"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or update .venv with the project and its dev tools

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

test: venv client ## Run every test (unit, integration, e2e)
	pytest

test-fast: venv ## Unit tests only
	pytest tests/unit

ui: venv ## The MLflow UI on http://127.0.0.1:5000 (experiments, runs, registered models)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 --host 127.0.0.1 --port 5000 \
	  --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/.mlflow/mlflow.db}"

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
