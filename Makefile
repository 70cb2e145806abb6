# collabmask: `make run` brings the whole app up on embedded defaults; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run install install-test test lint format test-python test-torch bench clean-var

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "collabmask needs Python 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[ml]"
	@touch $@

install: $(VENV)/.installed

## run: install, migrate, seed the demo, start embedded Redis + Celery worker + web on http://$(HOST):$(PORT)/
run: install
	$(BIN)/python manage.py run_embedded --host $(HOST) --port $(PORT)

# Test tools, the PyTorch CPU build for the second Keras backend, and Chromium for browser tests.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[ml,test]"
	$(PIP) install --quiet torch==2.13.0
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; \
	fi
	@touch $@

install-test: $(VENV)/.installed-test

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## test: lint, the whole suite (TensorFlow backend), then the Keras code again under PyTorch
test: lint test-python test-torch

test-python: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

test-torch: install-test
	KERAS_BACKEND=torch $(BIN)/pytest -m keras tests/mlworker $(PYTEST_ARGS)

## bench: the quick mode of every benchmark (full runs: see bench/README.md)
bench: install-test
	mkdir -p bench/out
	$(BIN)/python bench/phantom_segmentation.py --quick
	$(BIN)/python bench/qata_benchmark.py --profile cpu --quick
	$(BIN)/python bench/throughput.py --quick

clean-var:
	rm -rf var/
