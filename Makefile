# collabmask: `make run` brings the whole app up on embedded defaults; `make test` runs every test.
SHELL := /bin/bash
# The newest supported Python on the PATH (pyproject.toml's requires-python), or PYTHON=...
PYTHON ?= $(shell python3 requirements/python_check.py --pick 2>/dev/null || echo python3)
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per Python version: switching PYTHON makes the virtualenv again.
INSTALLED := $(VENV)/.installed-py$(PY_VERSION)
INSTALLED_TEST := $(VENV)/.installed-test-py$(PY_VERSION)
PIP := $(BIN)/python -m pip
CONSTRAINTS := requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run install install-test test lint format test-python test-torch bench wheel clean-var

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) requirements/python_check.py
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PY_VERSION)" ]; then \
	  echo "$(VENV) was made with another Python: making it again with $(PYTHON) ($(PY_VERSION))"; \
	  rm -rf $(VENV); \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[ml]"
	@touch $@

install: $(INSTALLED)

## run: install, migrate, seed the demo, start embedded Redis + Celery worker + web on http://$(HOST):$(PORT)/
## (`collabmask start`, with the checkout's var/ as its data directory)
run: install
	$(BIN)/collabmask start --data-dir var --host $(HOST) --port $(PORT)

# Test tools, the PyTorch CPU build for the second Keras backend, and Chromium for browser tests.
$(INSTALLED_TEST): $(INSTALLED)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[ml,test]"
	$(PIP) install --quiet torch==2.13.0
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; \
	fi
	@touch $@

install-test: $(INSTALLED_TEST)

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
	$(BIN)/python bench/qata_ensemble.py --quick --out bench/out/qata-ensemble-quick
	$(BIN)/python bench/throughput.py --quick
	$(BIN)/python bench/reader_study.py --quick --out bench/out/reader_study.png
	$(BIN)/python bench/interactive.py --quick
	$(BIN)/python bench/shape_blinding.py --quick

## wheel: the wheel in dist/ (templates, static files and migrations inside)
wheel: install
	rm -rf dist build
	$(PIP) wheel --quiet --no-deps --wheel-dir dist .

clean-var:
	rm -rf var/
