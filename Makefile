# Two commands for a new machine: `make serve` and `make test`. Both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test bench install

$(BIN)/lrpseg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/lrpseg

install: $(BIN)/lrpseg

serve: install
	$(BIN)/lrpseg serve

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/lrp_speed.py
