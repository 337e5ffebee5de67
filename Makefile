# Everything installs into .venv from PyPI; nothing else is needed but python3 (3.11+).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install dev test check unit clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The whole service on embedded PostgreSQL and etcd, with the local executor.
dev: install
	$(BIN)/hourglass dev

# Static checks, then every test (unit, integration, acceptance) on real servers.
test: check
	$(BIN)/python -m pytest

check: install
	PATH="$(CURDIR)/$(BIN):$$PATH" ./scripts/check

unit: install
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) build
