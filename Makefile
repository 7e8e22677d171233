# shoal — the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOIL_VENV := bench/.toil-venv
CONFIG ?= config.example.yaml

.PHONY: setup tools toil run run-slurm test lint format bench clean compiled compiled-clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# System tools some tests use (promtool, systemd-analyze, Slurm, shellcheck; cloud-init unpacked
# apart, never installed). Installed when we are root
# and apt-get exists; otherwise the tests that need them skip and name the tool.
tools:
	@sh scripts/install-tools.sh

# Toil 9.6 in its own virtualenv: the oracle for differential tests and the peer in bench/.
# Never a runtime dependency. A failure here only makes those tests skip.
toil: $(TOIL_VENV)/.installed
$(TOIL_VENV)/.installed:
	@($(PYTHON) -m venv $(TOIL_VENV) && $(TOIL_VENV)/bin/pip install -q toil==9.6.0 \
	  && touch $@) || echo "warning: could not build the Toil oracle venv; Toil tests will skip"

# Opt-in, never part of `make setup` or `make test`: the scaler's hot modules compiled with
# mypyc (scripts/build_compiled.py; ~1.9x less CPU on bench/simulate.py's replay, see
# bench/README.md). Needs a C compiler and Python's headers; when the build fails the
# pure-Python modules stay in use. Rebuild after editing a compiled module, or go back with
# `make compiled-clean` (the tests that spy on the scaler's internal calls need pure Python).
compiled: setup
	$(BIN)/pip install -q -e '.[dev,compiled]'
	$(BIN)/python scripts/build_compiled.py || echo "warning: compiled scaler not built; pure Python in use"

compiled-clean:
	test ! -x $(BIN)/python || $(BIN)/python scripts/build_compiled.py --clean

run: setup
	$(BIN)/shoal run -c $(CONFIG)

# A Slurm cluster on this machine (munged, slurmctld, shoal's hooks) scaled by shoal on the local
# provider: submit jobs and watch sinfo. Needs root and Slurm (`make tools`); Ctrl-C stops all.
run-slurm: setup
	$(BIN)/python scripts/run_slurm.py $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup tools toil lint
	$(BIN)/pytest -q

bench: setup toil
	$(BIN)/python bench/binpack.py
	$(BIN)/python bench/cost_gap.py
	$(BIN)/python bench/footprint.py
	$(BIN)/python bench/simulate_io.py
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/slurm_hook.py

clean:
	rm -rf $(VENV) $(TOIL_VENV) .pytest_cache .ruff_cache build scaler/*.so scaler/_compiled.json
