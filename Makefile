# vlprune: two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION := 2.13.0
OPEN_CLIP_VERSION := 3.3.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all lint clean report-screenshot

venv: $(STAMP)

# torch first, pinned: the CPU build of 2.13.0 is on disk; a looser pin pulls several GB of CUDA wheels.
# open_clip without its dependencies: they pull torchvision and a newer torch (its tests import it beside a
# test-only torchvision stand-in, tests/helpers/fake_torchvision); ftfy and transformers come with [dev].
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps open-clip-torch==$(OPEN_CLIP_VERSION)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlprune demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# docs/report.png: a full demo's report (runs/demo, rewritten by `make demo`) as headless Chromium draws it
# (Debian package chromium), after the browser and plot-label checks pass on that run
report-screenshot: demo
	VLPRUNE_REPORT_RUN=runs/demo VLPRUNE_SCREENSHOT=docs/report.png $(PY) -m pytest -q tests/test_demo.py \
		-k "chromium or overlap"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
