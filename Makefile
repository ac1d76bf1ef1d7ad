# Two entry points for a fresh machine (Python >= 3.11): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# The main job: install, then run the REST service with its embedded defaults (SQLite + FAISS in
# the user data folder). It prints where it listens and where the first admin key is.
run: install
	$(BIN)/yingyan serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole test suite, with lint and type checks first (PostgreSQL started if it is down).
test: lint
	bash scripts/ensure-postgres.sh
	bash scripts/install-video-test-deps.sh
	$(BIN)/python -m pytest
