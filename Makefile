# One target per chore; CI runs `make test` exactly as a developer does.
SHELL := bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY := .venv/bin/python
# pytest-xdist workers of make test and test-fast: the suite waits on services about half the time
# (one core idle in a serial run), so two workers keep both cores busy. Each worker starts its own
# session services (MLflow, moto, the trained lineage): more workers need more PostgreSQL slots.
TEST_WORKERS ?= 2
# The project's tools (airflow, mlflow, uvicorn, streamlit, locust, kubectl ...) come first.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools && .tools/bin/pip install --quiet "uv>=0.8,<1"

# Bytecode compiled once here, as the images do (UV_COMPILE_BYTECODE): where PYTHONDONTWRITEBYTECODE
# is set, Python otherwise compiles every module it imports from source in every process, which
# tripled the CPU time of `readmission status` and slows each subprocess the tests start.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode
	touch $@

setup: .venv/.synced  ## Create .venv with every dependency, from uv.lock

lint: setup  ## Linter, formatter check and type checker
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# 816 tests, quiet machine, 2026-12-06: 8 min 29 s wall (8:23 in pytest) in a set-up checkout,
# 9 min 36 s from a clean clone (`bash .ci/run`); the same machine on 1010823, serial, before the
# suite's speed-up: 17 min 32 s and 17 min 46 s. `time make test`.
test: setup  ## All tests, against real PostgreSQL, MLflow, Airflow, uvicorn, promtool, Locust
	scripts/ensure-postgres
	scripts/ensure-test-tools
	$(MAKE) --no-print-directory lint
	.venv/bin/pytest -n $(TEST_WORKERS)

# 465 tests, quiet machine, 2026-12-06, on two workers: 1 min 4 s and 1 min 6 s wall (60-61 s in
# pytest); the same machine on 1010823, serially, before the workers: 1 min 45 s (99 s).
# `time make test-fast`.
test-fast: setup  ## The tests that start no process (not marked slow): real PostgreSQL, about 65 s
	scripts/ensure-postgres
	.venv/bin/pytest -n $(TEST_WORKERS) -m "not slow"

bench: setup  ## Benchmarks on the real data set (DATA_SOURCE, default ../shared/data/dataset_diabetes.zip)
	scripts/ensure-postgres
	$(PY) bench/model_quality.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}
	$(PY) bench/ingest.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}
	$(PY) bench/training_step.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}
	$(PY) bench/serving.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}
	$(PY) bench/stream.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}
	$(PY) bench/swap.py --source $${DATA_SOURCE:-../shared/data/dataset_diabetes.zip}

demo: setup  ## The whole loop on this machine: services, two extracts ingested + trained via Airflow, promote, predict
	$(PY) scripts/demo.py

# Only Docker with Compose and python3 (the .env generator is standard library): no project venv.
up:  ## Docker Compose back office (creates .env with generated secrets when absent)
	scripts/compose-up

down:  ## Stop the compose stack and the k3d cluster
	scripts/compose-down

# deploy.k8s's four packages (dependency group deploy), not the development venv.
.deploy/venv/.synced: pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=.deploy/venv $(UV) sync --frozen --only-group deploy --no-install-project
	touch $@

k8s-up: .deploy/venv/.synced  ## k3d cluster: build and import images, apply manifests, wait for rollouts
	scripts/k8s-up

.PHONY: help setup lint test test-fast bench demo up down k8s-up
