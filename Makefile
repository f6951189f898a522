# Two entry points: `make run` (server on the embedded default config) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/conduwuit

test: $(VENV)/.installed-test
	$(BIN)/ruff check conduwuit tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.versions_rps
	$(BIN)/python -m bench.accounts
	$(BIN)/python -m bench.idle_syncs
	bench/hsbench_compare.sh --quick

clean:
	rm -rf $(VENV) build *.egg-info
