# Two entry points, each self-contained on a fresh machine (creates .venv, pinned installs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv

$(BIN)/sssd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/sssd

demo: $(BIN)/sssd
	$(BIN)/sssd demo

test: $(BIN)/sssd
	$(BIN)/python -m pytest -q
