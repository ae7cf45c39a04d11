# Every target runs from a fresh clone: `make install` creates the virtual environment first, from the lock files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Locked versions (pip-tools, compiled from pyproject.toml by `make lock`): the largest set first, so the
# smaller ones are subsets of it with the same versions.
TRAIN_LOCK := requirements-train.lock
DEV_LOCK := requirements-dev.lock
RUNTIME_LOCK := requirements.lock
COMPILE := $(BIN)/pip-compile --quiet --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: help install install-train test lint lock screenshots bench bench-ui

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/relevance: pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.train-installed: $(BIN)/relevance $(TRAIN_LOCK)
	$(BIN)/pip install --quiet -r $(TRAIN_LOCK)
	@touch $@

install: $(BIN)/relevance ## create .venv and install the project with its dev tools (locked versions)

install-train: $(VENV)/.train-installed ## add TensorFlow (training and the Keras oracle tests)

lock: install ## re-resolve the lock files after a change to pyproject.toml's dependencies (keeps other pins)
	$(COMPILE) --extra dev --extra train -o $(TRAIN_LOCK) pyproject.toml
	$(COMPILE) --extra dev -c $(TRAIN_LOCK) -o $(DEV_LOCK) pyproject.toml
	$(COMPILE) -c $(TRAIN_LOCK) -o $(RUNTIME_LOCK) pyproject.toml

test: install-train ## run the whole test suite (needs PostgreSQL and Redis, see .ci/run)
	$(BIN)/python -m pytest

lint: install ## ruff, strict mypy and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

screenshots: install ## the browser tests, saving the README's pictures to docs/screenshots/
	$(BIN)/python -m pytest tests/ui/test_browser.py --screenshots docs/screenshots

bench: install ## engine benchmark: reviews/s, ratio to the plain loop, 25k seconds, peak memory
	$(BIN)/python -m scripts.bench_engine $(BENCH_ARGS)

bench-ui: install ## web page times (p50/p95 per page) with 25,000 stored explanations on PostgreSQL
	$(BIN)/python -m scripts.bench_ui

.PHONY: demo bench-service

demo: install ## the service on this machine (SQLite, embedded Redis, workers, web), the 25k job; Ctrl-C stops all
	$(BIN)/python -m scripts.demo $(DEMO_ARGS)

bench-service: install ## 25k reviews through the API, 2 workers, PostgreSQL: wall time, reviews/s, storage
	$(BIN)/python -m scripts.bench_service $(BENCH_ARGS)

.PHONY: bench-load

bench-load: install ## 16 clients read for 60 s while the 25k job runs: req/s, p50/p95/p99, errors, job slowdown
	$(BIN)/python -m scripts.bench_load $(BENCH_ARGS)
