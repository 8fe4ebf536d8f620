# Quick start: `make demo` runs the exporter against a simulated cluster (flags through ARGS,
# e.g. make demo ARGS="--listen 127.0.0.1:9900 --api v4"; ARGS=--help lists them); `make test`
# runs ruff, mypy and the tests. Each creates $(VENV) (default .venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-scale lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[fast,test,dev]'
	touch $@

demo: $(BIN)/.installed
	@echo $(BIN)/emqx-client-exporter demo $(ARGS)
	@$(BIN)/emqx-client-exporter demo $(ARGS) || { status=$$?; echo 'make demo: flags go' \
	  'through ARGS, e.g. make demo ARGS="--listen 127.0.0.1:9900" (ARGS=--help lists them)' >&2; \
	  exit $$status; }

lint: $(BIN)/.installed
	$(BIN)/ruff check exporter emqx_simulator tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-scale: $(BIN)/.installed
	$(BIN)/pytest -m scale

bench: $(BIN)/.installed
	$(BIN)/python -m bench.poll_vs_floor
	$(BIN)/python -m bench.million
	$(BIN)/python -m bench.scrape_latency
	$(BIN)/python -m bench.scrape_latency --case series --seconds 40

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
