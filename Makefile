# Two commands do all set-up on a fresh machine:
#   make quickstart   create .venv, install lmforge (no extras), train the tiny bundled model
#   make test         create .venv, install lmforge with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install quickstart test clean

# lmforge itself, without extras: what `lmforge fit` needs. Optional packages cost every run start-up time
# (torchmetrics, which Lightning imports, imports scipy.signal and matplotlib whenever they are installed).
$(BIN)/lmforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

# The test extras (pytest, and every optional backend the suite covers), on top.
$(VENV)/.dev: $(BIN)/lmforge
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/lmforge

quickstart: install
	$(BIN)/lmforge fit --config quickstart

test: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
