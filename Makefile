# The Makefile is the interface: install, demo, test, chaos, bench, lint.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/pytest
# Integration tests mostly wait (on the provider's 60 s rules, on spread campaigns): run them side by side.
TEST_WORKERS ?= 4

.PHONY: install demo test unit integration chaos bench bench-quick lint typecheck clean

install: $(BIN)/smsc-mailer

$(BIN)/smsc-mailer: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/smsc-mailer-dev demo

test: install
	$(PYTEST) -q -n $(TEST_WORKERS) --dist worksteal

unit: install
	$(PYTEST) -q tests/unit

integration: install
	$(PYTEST) -q tests/integration

chaos: install
	$(BIN)/smsc-mailer-dev chaos

bench: install
	$(BIN)/smsc-mailer-dev bench

bench-quick: install
	$(BIN)/smsc-mailer-dev bench --quick

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
