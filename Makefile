# vlprune: two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all lint clean

venv: $(STAMP)

# torch first, pinned: the CPU build of 2.13.0 is on disk; a looser pin pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlprune demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
