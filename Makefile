# Two commands set everything up: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QS := $(VENV)/bin/quantswarm
STAMP := $(VENV)/.installed
MODEL ?= smollm2-135m-instruct-q4_1
JOBS ?= $(shell nproc)
export CMAKE_BUILD_PARALLEL_LEVEL := $(JOBS)
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false

.PHONY: install nats model tools demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	@# torch first: the CPU build this machine kind ships (a plain torch pulls CUDA wheels)
	$(PY) -m pip install -q torch==2.13.0
	@# llama.cpp is compiled once, by `engine build`: llama-cpp-python installs without its own copy
	@# (LLAMA_BUILD=OFF) and loads the shared libraries built beside the tools
	@echo "installing quantswarm (llama-cpp-python without its own llama.cpp build)"
	CMAKE_ARGS="-DLLAMA_BUILD=OFF $(CMAKE_ARGS)" $(PY) -m pip install -q -e '.[dev]'
	$(QS) engine build --jobs $(JOBS)
	touch $(STAMP)

install: $(STAMP)

nats:
	@command -v nats-server >/dev/null || { echo "installing nats-server (Debian package)"; \
	  $$( [ $$(id -u) = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ $$(id -u) = 0 ] || echo sudo ) apt-get install -y -qq nats-server >/dev/null; }

model: install
	$(QS) models fetch $(MODEL)

tools: install
	$(QS) engine build --jobs $(JOBS)

demo: install nats model tools
	$(QS) demo --model $(MODEL)

test: install nats model tools
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q -ra tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
