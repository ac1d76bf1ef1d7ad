# Two entry points for a fresh machine (Python >= 3.11): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CompreFace SDK's own environment: it pins requests-toolbelt 0.9.1, which needs the
# end-of-life urllib3 1.x, so it is kept out of $(VENV). tests/test_compreface.py runs the SDK
# in it (tests/_compreface_sdk.py) against a `yingyan serve` of $(VENV).
COMPREFACE_VENV ?= .venv-compreface

.PHONY: run test install install-dev install-compreface lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The core only: what `yingyan serve` needs with its embedded defaults. Extras (PostgreSQL,
# Milvus, evaluation plots, video) are `pip install -e '.[postgres]'` etc., or '.[all]'.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

# Everything: every extra (`all`) and the test and lint tools.
install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

$(COMPREFACE_VENV)/bin/python:
	$(PYTHON) -m venv $(COMPREFACE_VENV)

install-compreface: $(COMPREFACE_VENV)/bin/python
	$(COMPREFACE_VENV)/bin/pip install --quiet 'compreface-sdk>=0.6' 'urllib3<2'

# The main job: install, then run the REST service with its embedded defaults (SQLite + FAISS in
# the user data folder). It prints where it listens and where the first admin key is.
run: install
	$(BIN)/yingyan serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole test suite, with lint and type checks first (PostgreSQL started if it is down).
test: lint install-compreface
	bash scripts/ensure-postgres.sh
	bash scripts/install-video-test-deps.sh
	$(BIN)/python -m pytest
