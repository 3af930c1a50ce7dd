# imgsim: `make run` starts the API, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: run test test-fast lint-imports bench docs install install-dev browser clean

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

## The layer contract of .importlinter, then the whole suite: real ResNet50 (random weights), real Milvus Lite,
## a real Milvus server and the console in a real (headless) Chromium.
test: install-dev browser
	$(VENV)/bin/lint-imports
	MODEL_WEIGHTS=random $(PY) -m pytest

## The layer contract, then the suite without the tests marked slow.
test-fast: install-dev browser
	$(VENV)/bin/lint-imports
	MODEL_WEIGHTS=random $(PY) -m pytest -m "not slow"

## Only the layer contract (.importlinter): no import may point the wrong way.
lint-imports: install-dev
	$(VENV)/bin/lint-imports

## The benchmarks of bench/ (30-40 minutes): raw results in results/bench/ (git-ignored), then, like `make docs`,
## copied into docs/data/bench/ and rendered into docs/benchmarks.md, docs/zh-CN/benchmarks.md and docs/img/.
bench: install-dev
	$(PY) -m bench.run

## Take the latest results of `make bench` and `make test` (results/, git-ignored) into docs/data/ and render the
## figures pages in both languages from there; without new results it re-renders what docs/data/ holds.
docs: install-dev
	$(PY) -m bench.run --report-only
	$(PY) -m tests.report

clean:
	rm -rf $(VENV) .pytest_cache
