# `make demo`, `make test` and `make docs` bootstrap .venv on first use; later runs reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rand-ensemble demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The site, warnings as errors (broken cross-references too); notebooks are rendered from their
# stored outputs, never executed here (docs/execute_notebooks.py makes them, by hand).
docs: $(STAMP)
	rm -rf docs/reference/_autosummary
	JAX_PLATFORMS=cpu $(BIN)/python -m sphinx -b html -E -W --keep-going -n -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python scripts/bench_all.py --out bench-out/bench.json

clean:
	rm -rf $(VENV) demo-out bench-out build dist *.egg-info docs/_build docs/reference/_autosummary
