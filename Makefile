# tack: `make run` starts the stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
TOOLS_STAMP := $(VENV)/.tools

.PHONY: help venv lock tools git-tool proto proto-check lint fmt types unit test run trigger ci-run ci-cancel bench bench-smoke chaos soak clean

help:
	@echo "make run      start tack (control plane + stub provider; a local sandbox without Tangled config)"
	@echo "make test     install, then lint, type-check and run the whole test suite"
	@echo "make trigger  push a commit to a running sandbox (PR=1: open a pull request)"
	@echo "make ci-run   run CI in a running sandbox through the XRPC API (PIPELINE=<id>: retry it)"
	@echo "make ci-cancel cancel the newest running sandbox pipeline (PIPELINE=<id>: that one)"
	@echo "make bench    run the benchmarks (results in bench-results/latest.json)"
	@echo "make chaos    run the chaos harness (CHAOS_SECONDS, CHAOS_SEED)"
	@echo "make soak     run the chaos harness at steady load for SOAK_SECONDS"
	@echo "make proto    regenerate tack_common/pb from proto/"
	@echo "make lock     re-resolve requirements.lock and requirements-runtime.lock from pyproject.toml"

# Every package comes from requirements.lock, hash-checked; the project itself is installed without
# resolving anything (its build requirement, setuptools, is in the lock too).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the locks from pyproject.toml (uv: one universal lock with hashes for every platform):
# requirements.lock (everything, for make run/test) and requirements-runtime.lock (the image).
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --custom-compile-command 'make lock' --quiet
lock: $(STAMP)
	$(PY) -m pip install --quiet uv==0.13.9
	$(VENV)/bin/uv pip compile pyproject.toml tools/build-requirements.in --extra dev $(LOCK_FLAGS) -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml tools/build-requirements.in $(LOCK_FLAGS) -o requirements-runtime.lock

venv: $(STAMP)

# Debian's docker-compose validates compose.yaml (no Docker engine is needed for `config`).
$(TOOLS_STAMP): | $(STAMP)
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	  else echo "install docker-compose (Debian: apt-get install docker-compose) to validate compose.yaml"; exit 1; fi; }
	touch $(TOOLS_STAMP)

# tack loads .tangled/workflows from knots with the git client (and the sandbox knot serves real
# repositories with it): Debian's package when missing, and at least the version Debian 12 ships.
GIT_MIN := 2.39
git-tool:
	@command -v git >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null; \
	  else echo "install git >= $(GIT_MIN) (Debian: apt-get install git): tack loads workflows with it"; exit 1; fi; }
	@git --version | awk -v min=$(GIT_MIN) '{ split($$3, v, "."); split(min, m, "."); \
	  if (v[1] < m[1] || (v[1] == m[1] && v[2] < m[2])) { \
	    print "git " $$3 " is too old: tack needs git >= " min " (Debian 12 ships 2.39)"; exit 1 } }'

tools: $(TOOLS_STAMP) git-tool

proto: $(STAMP)
	$(PY) tools/genproto.py

proto-check: $(STAMP)
	$(PY) tools/genproto.py --check

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

types: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: tools proto-check lint types unit

run: $(STAMP) git-tool
	$(PY) -m tack_sandbox

# The sandbox's commands (see `make run`'s banner): PR=1 opens a pull request; PIPELINE=<id> names a pipeline.
trigger: $(STAMP) git-tool
	$(PY) -m tack_sandbox trigger $(if $(filter-out 0 no false,$(PR)),--pr)

ci-run: $(STAMP) git-tool
	$(PY) -m tack_sandbox run-ci $(if $(PIPELINE),--pipeline $(PIPELINE))

ci-cancel: $(STAMP)
	$(PY) -m tack_sandbox cancel $(if $(PIPELINE),--pipeline $(PIPELINE))

bench: $(STAMP) git-tool
	$(PY) -m tests.bench

chaos: $(STAMP)
	$(PY) -m tests.chaos --seconds $${CHAOS_SECONDS:-120} $${CHAOS_SEED:+--seed $$CHAOS_SEED}

soak: $(STAMP)
	$(PY) -m tests.chaos --soak --seconds $${SOAK_SECONDS:-1800}

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis .data bench-results
