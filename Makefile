# Two entry points for a fresh machine: `make run` (set up, then run the bot) and
# `make test` (set up, then run every check). torch==2.13.0 is installed first so pip takes
# the CPU build from this machine's disk instead of downloading a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint unit

$(BIN)/atelier: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/atelier

run: setup
	$(BIN)/atelier run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# tests/postgres.sh and tests/browser.sh install (from Debian) and provide a PostgreSQL server and
# a headless Chromium with its ChromeDriver; CI refuses to skip the tests that need them.
# The suite runs in two worker processes (pytest-xdist), a file per worker at a time: the end to
# end tests spend much of their time waiting on the emulator, and the two cores stay busy.
# The second run repeats the tests that compare two code paths within a tolerance
# (`-m cross_path`, about 45 s) with the CPU's plainest kernels, so a tolerance that only holds
# for this machine's vector kernels fails here, not on someone else's CPU.
unit: setup
	bash tests/postgres.sh bash tests/browser.sh $(BIN)/pytest -q -n 2 --dist loadfile
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest -q -m cross_path tests/generation

test: lint unit
