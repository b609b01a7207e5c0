# Two entry points for a fresh machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/default

.PHONY: setup run test bench clean

$(BIN)/adascale: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: 2.13.0 is the CPU wheel; a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/adascale

run: setup
	$(BIN)/adascale run --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/bench_scales.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
