# Two commands for a new machine: `make serve` and `make test`. Both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test bench install lint

$(BIN)/lrpseg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/lrpseg

install: $(BIN)/lrpseg

serve: install
	$(BIN)/lrpseg serve

# ruff (lint + format check) and mypy ([tool.mypy] in pyproject.toml), through the venv's tools
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/lrp_speed.py
