# Two commands set up everything on a fresh machine (see README):
#   make demo   - install the inference path and classify the bundled example catalogue (offline)
#   make test   - install everything (training, dask, dev tools) and run lint, the import
#                 contract (lint-imports) and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python

demo: $(BIN)/python
	$(PIP) install -e '.[cpu]'
	$(BIN)/galmerge classify --catalog catalogs/sdss_example/sdss_example.csv --output catalogs/sdss_example/sdss_example_scores.csv

test: $(BIN)/python
	$(PIP) install -e '.[cpu,train,dask,dev]'
	$(BIN)/ruff check galmerge tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(BIN)/python
	$(BIN)/ruff check galmerge tests benchmarks scripts
	$(BIN)/mypy galmerge/conventions.py galmerge/errors.py galmerge/data galmerge/inference \
	    galmerge/training/config.py galmerge/training/presets.py galmerge/training/metrics.py \
	    galmerge/training/data.py
