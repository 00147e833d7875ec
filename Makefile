# The two commands a user needs: `make demo` and `make test`. Everything the project
# needs is installed from here (a virtualenv in .venv), never by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration clean services-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/engagement demo

lint: $(STAMP)
	$(BIN)/ruff check streams scoring schemas tests
	$(BIN)/ruff format --check streams scoring schemas tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

test: lint typecheck
	$(BIN)/pytest tests

services-down: $(STAMP)
	$(BIN)/engagement services down

clean:
	rm -rf $(VENV) .engagement .mypy_cache .pytest_cache .ruff_cache
