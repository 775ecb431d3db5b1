# durable_mqtt — every host-side job starts here.
# `make test` on a fresh Debian machine: venv, pinned tools, mosquitto, tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test sim soak bench mpy deploy clean tools

test: tools
	$(BIN)/pytest -q tests $(PYTEST_ARGS)

tools: $(STAMP)
	@sh tools/ensure_mosquitto.sh

$(STAMP): requirements-dev.txt
	@$(PY) -m venv $(VENV) || { echo "error: '$(PY) -m venv' failed (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

clean:
	rm -rf $(VENV) build sim-run

# The main job: the example firmware on a simulated board (flash image +
# local mosquitto), power-cut a few times, with a report of what was lost.
SIM_ARGS ?=
sim: tools
	$(BIN)/python tools/sim.py $(SIM_ARGS)

# Side by side with the peer clients (installed from PyPI into a temporary
# folder at run time); writes docs/benchmarks.md and docs/benchmarks.svg.
BENCH_ARGS ?=
bench: tools
	$(BIN)/python tools/bench/run.py $(BENCH_ARGS)

# Long runs: the resilience streams with 120 drops each, a longer simulation.
soak: tools
	SOAK=1 $(BIN)/pytest -q tests/test_resilience.py tests/test_kill_restart.py $(PYTEST_ARGS)
	$(BIN)/python tools/sim.py --cuts 20 --no-progress

# .mpy for the boards: build/mpy/{xtensawin,armv6m}/durable_mqtt/*.mpy and a size table.
mpy: tools
	$(BIN)/python tools/build_mpy.py

# Copy the library and firmware/ to a board: `make deploy PORT=/dev/ttyUSB0`,
# MPY=xtensawin (ESP32) or MPY=armv6m (RP2040) for .mpy files (built first),
# DEPLOY_ARGS=--with-secrets to copy firmware/secrets.json, DEPLOY_ARGS=--dry-run to only print.
PORT ?= /dev/ttyUSB0
deploy: $(STAMP) $(if $(MPY),mpy)
	$(BIN)/python tools/deploy.py --port $(PORT) $(if $(MPY),--mpy $(MPY)) $(DEPLOY_ARGS)
