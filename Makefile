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
