# kbmigrate — the two commands a newcomer runs: `make demo`, then `make test`.
# Each creates or refreshes the virtual environment (.venv) itself, from pyproject.toml.

SHELL := /bin/bash
# The first Python >= 3.11 on PATH (override: make PYTHON=/path/to/python3.12 ...).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
             command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
             && { echo $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SIZE   ?= small
SEED   ?= 42
LAB_ARGS ?=  # e.g. --allow-root (a container whose only user is root), --no-browser

.PHONY: help venv demo test lab edit server-stop clean

help:
	@echo "make demo   build the demo database on the embedded server (SIZE=small|medium|large, SEED=42)"
	@echo "make test   run the whole test suite against a real PostgreSQL (embedded, or KBMIGRATE_TEST_DSN)"
	@echo "make lab    step through the runbook by hand in JupyterLab on the demo database, as a run (runs/manual-...)"
	@echo "make edit   edit the runbook's sources (notebooks/*.md) in JupyterLab, opened as notebooks"
	@echo "make server-stop   stop the embedded server; make clean   remove .venv and local state"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found on PATH; install it or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@# uv (from PyPI) installs the same pins as pip in about a third of the time; pip when uv cannot be had.
	@# Compiled here: PYTHONDONTWRITEBYTECODE may forbid it later, and every kernel would pay for it.
	if $(BIN)/python -m pip install --quiet 'uv>=0.5'; then \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'; \
	else \
	  $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e '.[dev]'; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/kbmigrate demo-db --embedded --size $(SIZE) --seed $(SEED)
	$(BIN)/kbmigrate run --embedded --auto-approve  # the demo approves its own rehearsal, recorded as a self-approval

test: venv
	$(BIN)/python -m pytest

# A hand-stepped run: a run folder with the notebooks ready, JupyterLab opened there; the run is
# finished (report, seal) when JupyterLab closes.
lab: venv
	$(BIN)/kbmigrate lab --embedded $(LAB_ARGS)

# The sources are MyST text files; tools/jupyterlab/overrides.json makes JupyterLab open them as
# notebooks (jupytext) on a double click. Saving writes the text, never outputs.
edit: venv
	cd notebooks && ../$(BIN)/jupyter lab --LabServerApp.app_settings_dir=../tools/jupyterlab

server-stop: venv
	$(BIN)/kbmigrate server stop

clean:
	-$(BIN)/kbmigrate server stop
	rm -rf $(VENV) .kbmigrate .pytest_cache
