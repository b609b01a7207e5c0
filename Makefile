# Two entry points for a fresh machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/default

.PHONY: setup run test test-unit bench bench-mace bench-adaptive clean

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
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2

# the cheap tests only (under a minute): no runs, no long training, no MD; `make test` runs everything
test-unit: setup
	$(BIN)/python -m pytest -q -m unit

bench: setup
	$(BIN)/python benchmarks/bench_scales.py

# adascale beside MACE (installs mace-torch into the venv; about 1 h 25 min with the default 15 min budgets)
bench-mace: setup
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_mace.py --data-dir $(or $(DATA),runs/testbed/split) --out-dir $(or $(BENCH_OUT),runs/bench)

# the adaptive models at equal training wall time over seeds (benchmarks/README.md: generate the data first;
# training alone takes about 2.8 T per seed; SEEDS=0,1,2 by default, TEST=FILE replaces the split's test frames)
bench-adaptive: setup
	$(BIN)/python benchmarks/bench_adaptive.py --data-dir $(or $(DATA),runs/bench_data/split) --budget-min $(or $(T),6) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(TEST),--test $(TEST)) \
		$(foreach g,$(GENERAL),--general $(g)) --out-dir $(or $(BENCH_OUT),runs/bench_adaptive)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
