# imgsim: `make run` starts the API, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: run test test-fast lint-imports bench docs install install-dev browser jq sample screenshot clean

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

## Debian's headless Chromium and a CJK font (WenQuanYi Micro Hei, for the console's 中文 labels) for the
## browser test of the console, each installed with apt-get only where it is missing: the font is checked on its
## own (fc-list, else its file), so a machine that already had chromium still gets it. Never `playwright install`
## (no browser download from a CDN). Without apt-get or root the browser test is skipped, saying why.
CJK_FONT_FILE := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
browser:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="chromium"; \
	if command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh family | grep -q .; then :; \
	elif [ -f $(CJK_FONT_FILE) ]; then :; \
	else missing="$$missing fonts-wqy-microhei"; fi; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
	  || echo "note: installing$$missing failed; without chromium the browser test is skipped, without the font 中文 shows as boxes"; \
	else echo "note: missing$$missing and no apt-get as root; without chromium the browser test is skipped, without the font 中文 shows as boxes"; fi

## jq, which the docs' base64 examples build their JSON bodies with (tests/test_readme.py runs them): installed
## with apt-get (Debian package jq) only where it is missing.
jq:
	@if command -v jq >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq \
	  || echo "note: installing jq failed; tests/test_readme.py will say jq is missing"; \
	else echo "note: jq is missing and there is no apt-get as root: install jq to run the docs' base64 examples"; fi

## The sample photo the README's examples use, from a package install-dev installs (nothing downloaded):
## scikit-image's motorcycle_left.png as a JPEG of about 300 KB, in $(SAMPLE_DIR)/motorcycle.jpg.
SAMPLE_DIR ?= img-pool
sample: install-dev
	mkdir -p $(SAMPLE_DIR)
	$(PY) -c "import pathlib, sys, skimage; from PIL import Image; \
	  Image.open(pathlib.Path(skimage.__file__).parent / 'data' / 'motorcycle_left.png').convert('RGB') \
	  .save(sys.argv[1], quality=99)" $(SAMPLE_DIR)/motorcycle.jpg

## The README's console screenshot (img/console.png): real photos searched with EfficientNet-Lite0's real weights
## in headless Chromium; and the Duplicates view's (img/console-duplicates.png), copies of some of them scanned. Run on purpose after a console change; make test never rewrites it.
screenshot: install-dev browser
	$(PY) -m tests.screenshot

## Start the API on http://localhost:7000 with embedded Milvus Lite (./data/milvus.db).
run: install
	$(PY) main.py serve

## `make lint`, then the whole suite: real ResNet50 (random weights), real Milvus Lite, a real Milvus server
## and the console in a real (headless) Chromium.
test: lint browser jq
	MODEL_WEIGHTS=random $(PY) -m pytest

## `make lint`, then the suite without the tests marked slow.
test-fast: lint browser jq
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

## The benchmarks of bench/ (about an hour: quality, speed, region search, duplicate scans and re-embedding from kept
## sources, bench/run.py's parts): raw results in results/bench/ (git-ignored), then, like `make docs`,
## copied into docs/data/bench/ and rendered into docs/benchmarks.md, docs/zh-CN/benchmarks.md and docs/img/.
bench: install-dev browser
	$(PY) -m bench.run

## Take the latest results of `make bench` and `make test` (results/, git-ignored) into docs/data/ and render the
## figures pages in both languages from there; without new results it re-renders what docs/data/ holds.
docs: install-dev browser
	$(PY) -m bench.run --report-only
	$(PY) -m tests.report

clean:
	rm -rf $(VENV) .pytest_cache
