# The only entry point: every target builds .venv by itself on a machine that
# has nothing but python3 and make. `make run` installs only what the service
# needs (RUN_STAMP), every other target the dev extras too (STAMP); each stamp
# is rebuilt whenever pyproject.toml or constraints.txt changes, and the dev one implies the
# service one, so `make run` after `make test` installs nothing more.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
SOURCES := stoat_ferret tests bench

.PHONY: help env run test soak flake lint typecheck format bench check clean constraints

help:
	@echo "make run        start the service (uvicorn) on an embedded SQLite file;"
	@echo "                flags through ARGS: make run ARGS='--port 9000'"
	@echo "make test       run the whole test suite with branch coverage"
	@echo "make lint       ruff check, ruff format --check, mypy --strict"
	@echo "make soak       the long property-based, fuzzing and load runs (SEED=n repeats one)"
	@echo "make flake      make test N times (N=20), LOAD=1 with every core kept busy"
	@echo "make bench      run the benchmarks in bench/ (JSON lines on stdout);"
	@echo "                options through BENCH_ARGS: make bench BENCH_ARGS='--quick --only scan'"
	@echo "make check      lint + test"
	@echo "make typecheck  mypy --strict alone"
	@echo "make format     ruff check --fix, then ruff format"
	@echo "make env        create .venv (every target that needs it does)"
	@echo "make constraints  pin every installed package anew in constraints.txt"
	@echo "make clean      remove .venv and the tools' caches"

# pyproject.toml pins what the project names; constraints.txt pins what those
# bring in too (`make constraints` writes it anew), so that a fresh machine
# installs what was tested.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

# Installed over what is there, not made anew (venv --clear): a service run
# from this .venv keeps working meanwhile. pip removes nothing, so a package
# no longer pinned stays until `make clean` (CI, on a fresh checkout, sees it).
$(RUN_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $(RUN_STAMP)

# One pip run for both (not the service's, then the extras): half the resolving.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(RUN_STAMP) $(STAMP)

# Every package `pip install -e '.[dev]'` brings, as it resolves today, into
# constraints.txt: run after changing a pin in pyproject.toml.
CONSTRAINTS_VENV := .venv-constraints
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ echo "# Written by make constraints: every package pip install -e '.[dev]' installs,"; \
	  echo "# pinned. pyproject.toml pins what the project names; this, what those bring in."; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check; \
	} > constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

env: $(STAMP)

# Flags for stoat-ferret: make run ARGS='--port 9000 --log-format json'
run: $(RUN_STAMP)
	$(BIN)/python -m stoat_ferret $(ARGS)

# pytest-xdist: one worker per core (WORKERS=0 runs in this process). Its default
# schedule (load) on purpose: loadfile/loadscope key tests by node id, and
# schemathesis gives every API operation's test the same one, so they would run one.
WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) \
		--cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

# The supervisor's state-machine properties, the API fuzzing and the load test, long
# profiles, exploring at random from SEED (printed first; `make soak SEED=n` repeats a run).
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
soak: $(STAMP)
	@echo "make soak: hypothesis seed $(SEED) (repeat with: make soak SEED=$(SEED))"
	STOATTEST_RELIABILITY_PROFILE=soak $(BIN)/python -m pytest --hypothesis-seed=$(SEED) \
		tests/reliability/test_supervisor_properties.py tests/reliability/test_api_fuzz.py \
		tests/reliability/test_load.py

# make test N times; LOAD=1 keeps every core busy meanwhile. Prints "N passed, M failed".
N ?= 20
LOAD ?=
flake: $(STAMP)
	$(BIN)/python tests/flake.py --runs $(N) $(if $(filter 1,$(LOAD)),--load) -- $(MAKE) --no-print-directory test

# The floor only ever rises.
COVERAGE_FLOOR ?= 94

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

check: lint test

clean:
	rm -rf $(VENV) $(CONSTRAINTS_VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov .hypothesis .flake *.egg-info
