# Two commands for a new machine: `make serve` and `make test`. Both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test bench install lint constraints

# Installs the versions in constraints.txt (what CI last passed with); `make constraints` renews them.
$(BIN)/lrpseg: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
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

# The newest versions pyproject.toml allows, frozen into constraints.txt (its header kept); then
# `make test` on them before committing the file.
FRESH := .venv-constraints
constraints:
	rm -rf $(FRESH)
	$(PY) -m venv $(FRESH)
	$(FRESH)/bin/pip install -q --upgrade pip
	$(FRESH)/bin/pip install -q -e '.[test]'
	{ grep '^#' constraints.txt; $(FRESH)/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(FRESH)
