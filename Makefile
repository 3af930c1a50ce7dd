# imgsim: `make run` starts the API, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: run test test-fast lint-imports bench install install-dev clean

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

## Start the API on http://localhost:7000 with embedded Milvus Lite (./data/milvus.db).
run: install
	$(PY) main.py serve

## The layer contract of .importlinter, then the whole suite: real ResNet50 (random weights), real Milvus Lite
## and a real Milvus server.
test: install-dev
	$(VENV)/bin/lint-imports
	MODEL_WEIGHTS=random $(PY) -m pytest

## The layer contract, then the suite without the tests marked slow.
test-fast: install-dev
	$(VENV)/bin/lint-imports
	MODEL_WEIGHTS=random $(PY) -m pytest -m "not slow"

## Only the layer contract (.importlinter): no import may point the wrong way.
lint-imports: install-dev
	$(VENV)/bin/lint-imports

## The benchmarks of bench/ (about 30 minutes); results land in bench/results/.
bench: install-dev
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache
