# Every target creates and uses .venv/ at the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format clean demo

install: $(STAMP)

# Where this machine has a local CPU torch wheel (pip's find-links), put it in
# place first so the unpinned `torch` requirement is already satisfied; anywhere
# else pip resolves torch from PyPI as usual (the CUDA build on GPU machines).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  ( $(BIN)/python -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null \
	    && $(BIN)/python -m pip install -q torch==2.13.0 ) || \
	  echo "no local CPU torch wheel: torch comes from PyPI"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The suite runs on every core (pytest-xdist), at most 8 test processes: each makes its
# own Postgres database and connections, and Postgres allows 100 by default.
# `make test TEST_WORKERS=0` runs it in this one process.
TEST_WORKERS ?= auto

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --numprocesses=$(TEST_WORKERS) --maxprocesses=8 --dist=worksteal --durations=25

# The whole lab on this machine: simulated Discord, the real bot, a real worker, a tiny
# model. `make demo DEMO_ARGS="--interactive"` keeps the simulated server open.
demo: install
	$(BIN)/loralab demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
