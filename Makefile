# Reverie's everyday commands. Works from a fresh clone and with an empty HOME: everything
# lives in .venv, created on first use and refreshed only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TS     := tests/ts
TS_STAMP := $(TS)/node_modules/.installed

.DEFAULT_GOAL := help
.PHONY: help system venv node demo test lint bench storm histories clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

system: ## Install the Debian packages Reverie and its tests use (bubblewrap, socat, nodejs, npm) if missing
	@PYTHON=$(PYTHON) bash deploy/system-packages.sh

venv: $(STAMP) ## Create .venv and install Reverie with its test extras

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

node: ## Install the TypeScript SDK its test drives Reverie with (npm ci in tests/ts), if npm is here
	@if command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(TS_STAMP); \
	else \
	  echo "reverie: npm is missing, so the TypeScript SDK's test will be skipped (make system installs it)"; \
	fi

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: system venv ## Run the embedded stack and one session end to end
	$(PY) -m reverie.starter.demo

# Two processes, each with its own Temporal dev server, PostgreSQL and fake model (the
# session-scoped fixtures), one test file per process at a time: most of a test's time is
# waiting, so two about halve the wall time on 2 cores.
test: system venv node ## Run the test suite
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: venv ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: system venv ## Measure turns, tool round trips, the sandbox's price, the event feed, the HTTP API, webhooks, scale
	$(PY) bench/session_overhead.py
	$(PY) bench/tool_roundtrip.py
	$(PY) bench/sandbox_price.py
	$(PY) bench/event_feed.py
	$(PY) bench/api_throughput.py
	$(PY) bench/memory.py
	$(PY) bench/webhooks.py
	$(PY) bench/scale.py
	$(PY) bench/dreams.py
	$(PY) bench/multiagent.py

storm: system venv ## Durability storm: 30 sessions while workers are SIGKILLed (STORM_ARGS=--sessions 90)
	$(PY) bench/storm.py $(STORM_ARGS)

histories: venv ## Record the missing workflow histories (tests.replay.record --rerecord to redo one)
	$(PY) -m tests.replay.record

clean: ## Remove the venv, caches and build output (not REVERIE_HOME)
	rm -rf $(VENV) build *.egg-info .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
