# Every target runs from a fresh clone: `make install` creates the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install install-train test lint bench bench-ui

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/relevance: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/relevance ## create .venv and install the project with its dev tools

install-train: install ## add TensorFlow (training and the Keras oracle tests)
	$(BIN)/pip install --quiet -e ".[dev,train]"

test: install-train ## run the whole test suite (needs PostgreSQL and Redis, see .ci/run)
	$(BIN)/python -m pytest

lint: install ## ruff and strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## engine benchmark: reviews/s, ratio to the plain loop, 25k seconds, peak memory
	$(BIN)/python -m scripts.bench_engine $(BENCH_ARGS)

bench-ui: install ## web page times (p50/p95 per page) with 25,000 stored explanations on PostgreSQL
	$(BIN)/python -m scripts.bench_ui

.PHONY: demo bench-service

demo: install ## the service on this machine (SQLite, embedded Redis, workers, web), the 25k job; Ctrl-C stops all
	$(BIN)/python -m scripts.demo $(DEMO_ARGS)

bench-service: install ## 25k reviews through the API, 2 workers, PostgreSQL: wall time, reviews/s, storage
	$(BIN)/python -m scripts.bench_service $(BENCH_ARGS)
