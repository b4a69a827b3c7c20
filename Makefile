# Every target creates or refreshes .venv itself: `make run` and `make test` work on a fresh clone.
# What gets installed comes from the committed, hash-checked lock files (`make lock` refreshes them):
# requirements.lock (runtime, for `make run`) and requirements-dev.lock (runtime + test and lint
# toolchain, for `make test`, `make lint`, `make bench`). pyproject.toml keeps the ranges users need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --require-hashes --no-deps
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PIP_TOOLS := pip-tools==7.7.0
LOCK_ARGS ?=
# Locks resolve against PyPI alone (no local pip.conf mirrors or find-links), so every hash is PyPI's.
COMPILE = env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(VENV)-lock/bin/pip-compile --quiet \
          $(LOCK_ARGS) --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
          --index-url https://pypi.org/simple --no-emit-index-url

.PHONY: run test lint bench clean venv format lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --no-build-isolation: the build backend (hatchling) comes from the lock too, not a fresh download.
define install_locked
	$(PIP) -r $(1)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q sidecar
endef

$(RUN_STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(call install_locked,requirements.lock)
	touch $@

$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(call install_locked,requirements-dev.lock)
	touch $@ $(RUN_STAMP)

venv: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/llm-sidecar demo --traffic $(DEMO_ARGS)

# ensure-tools before ensure-clis: it installs npm when it is missing.
test: $(DEV_STAMP)
	scripts/ensure-tools
	scripts/ensure-clis
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/ruff format --check sidecar tests bench
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format sidecar tests bench
	$(BIN)/ruff check --fix sidecar tests bench

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# `make lock` keeps existing pins and adds what pyproject.toml gained; `make lock LOCK_ARGS=--upgrade`
# moves every pin to the newest release in range. The dev lock is resolved first; the runtime lock
# is constrained by it, so both agree on every pin.
lock:
	test -x $(VENV)-lock/bin/pip-compile || ($(PYTHON) -m venv $(VENV)-lock && \
	  $(VENV)-lock/bin/python -m pip install --quiet $(PIP_TOOLS))
	$(COMPILE) --extra dev -o requirements-dev.lock pyproject.toml
	$(COMPILE) -c requirements-dev.lock -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) $(VENV)-lock build dist .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
