# The Makefile is the interface: install, demo, test, chaos, bench, lint.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/pytest
# Integration tests mostly wait (on the provider's 60 s rules, on spread campaigns): run them side by side.
TEST_WORKERS ?= 4

.PHONY: install demo up test unit integration chaos bench bench-quick lint typecheck clean flower

install: $(BIN)/smsc-mailer

$(BIN)/smsc-mailer: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/smsc-mailer-dev demo

# the demo's stack and dashboard kept running until Ctrl-C, to click through
up: install
	$(BIN)/smsc-mailer-dev demo --keep

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

# Flower (pip install -e '.[flower]'): on 127.0.0.1 its HTTP API is open to local scripts; any other address
# only with credentials, read by Flower from its environment:  FLOWER_BASIC_AUTH=u:p FLOWER_ADDRESS=0.0.0.0 make flower
FLOWER_PORT ?= 5555
flower: install
	@$(BIN)/python -c 'import flower' 2>/dev/null || { echo "make flower: Flower is not installed: $(BIN)/pip install -e '.[flower]'" >&2; exit 2; }
	@if [ -n "$$FLOWER_BASIC_AUTH" ]; then \
		exec $(BIN)/celery -A worker flower --address="$${FLOWER_ADDRESS:-127.0.0.1}" --port=$(FLOWER_PORT); \
	elif [ -n "$$FLOWER_ADDRESS" ] && [ "$$FLOWER_ADDRESS" != 127.0.0.1 ]; then \
		echo "make flower: FLOWER_ADDRESS=$$FLOWER_ADDRESS needs FLOWER_BASIC_AUTH=user:password" >&2; exit 2; \
	else \
		FLOWER_UNAUTHENTICATED_API=1 exec $(BIN)/celery -A worker flower --address=127.0.0.1 --port=$(FLOWER_PORT); \
	fi
