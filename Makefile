# The two commands: `make demo` and `make test`. Both set up .venv from nothing.
# For the edit loop: `make test-fast` (no end-to-end runs), `make lint`, `make typecheck`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.netspec-installed

.PHONY: demo test test-fast lint typecheck fmt clean

$(STAMP): pyproject.toml scripts/setup.sh scripts/constraints.txt
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	bash scripts/demo.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) runs build
