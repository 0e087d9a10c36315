# The two commands of the README: `make demo` and `make test`. Each does its own set-up on a
# fresh machine: the Python venv and packages, the MicroPython WebAssembly port from npm,
# the ESP32 stubs for the static check, and Mosquitto from the OS packages when missing.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench setup check-tools clean

test: setup
	$(BIN)/pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m bridge.demo $(DEMO_ARGS)

bench: setup
	$(BIN)/python bench/run.py

setup: $(STAMP) node_modules/.installed typings/.installed check-tools

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (Debian: apt-get install python3 python3-venv)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || ./scripts/os-packages.sh nodejs npm
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Type stubs of the ESP32 port, for the static check of firmware/ (tests/test_device_code.py).
typings/.installed: $(STAMP)
	$(BIN)/pip install -q --upgrade --target typings micropython-esp32-stubs
	touch $@

check-tools:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || ./scripts/os-packages.sh mosquitto mosquitto-clients
	@command -v node >/dev/null || ./scripts/os-packages.sh nodejs npm

clean:
	rm -rf $(VENV) node_modules typings .pytest_cache
