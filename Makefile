# Two commands do all the set-up on a fresh machine:
#   make serve   start signoff on its embedded SQLite default (./signoff.db)
#   make test    lint, type-check and run every test suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench-drain

# What signoff needs to run; the test tools (mypy, schemathesis, Hypothesis...) only for
# the tests, in the same venv.
$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/signoff serve

lint: $(BIN)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# The suites run on $(WORKERS) processes (pytest-xdist); the reliability suites, which
# time replicas and crashes against each other, run afterwards on their own.
WORKERS ?= 2

test: lint
	$(BIN)/pytest -n $(WORKERS) -m "not reliability"
	$(BIN)/pytest -m reliability

bench-drain: $(BIN)/.installed
	$(BIN)/python bench/drain.py --database-url $(or $(DATABASE_URL),postgresql://postgres@127.0.0.1:5432/test)
