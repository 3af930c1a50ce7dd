# imgsim: `make run` starts the API, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: run test test-fast lint-imports bench install install-dev browser clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Debian's headless Chromium (and a CJK font for the console's 中文 labels) for the browser test of the
## console, installed with apt-get only where /usr/bin/chromium is missing; never `playwright install`
## (no browser download from a CDN). Without apt-get or root the browser test is skipped, saying why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-wqy-microhei \
	  || echo "note: installing chromium failed; the browser test will be skipped"; \
	else echo "note: no /usr/bin/chromium and no apt-get as root; the browser test will be skipped"; fi

## Start the API on http://localhost:7000 with embedded Milvus Lite (./data/milvus.db).
run: install
	$(PY) main.py serve

## `make lint`, then the whole suite: real ResNet50 (random weights), real Milvus Lite, a real Milvus server
## and the console in a real (headless) Chromium.
test: lint browser
	MODEL_WEIGHTS=random $(PY) -m pytest

## `make lint`, then the suite without the tests marked slow.
test-fast: lint browser
	MODEL_WEIGHTS=random $(PY) -m pytest -m "not slow"

## What the code claims, checked before any test runs, each with zero findings: the layer contract
## (.importlinter), ruff's lint rules and formatting, and mypy's types (pyproject.toml holds their settings).
.PHONY: lint
LINTED := main.py conf model service
lint: install-dev
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

## Only the layer contract (.importlinter): no import may point the wrong way.
lint-imports: install-dev
	$(VENV)/bin/lint-imports

## The benchmarks of bench/ (30-40 minutes); results land in bench/results/.
bench: install-dev
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache
