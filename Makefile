# Every target sets itself up on a fresh machine: the first run creates .venv and installs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AVATAR_HOME ?= $(CURDIR)/.avatar_home
export DAGSTER_HOME ?= $(AVATAR_HOME)/dagster
PYTEST_ARGS ?=
# pytest-xdist workers for make test / test-fast (0: one process). Files go to workers whole (--dist loadfile), so
# a module's fixtures are built once, in the order tests/conftest.py gives them (the slowest first,
# --no-loadscope-reorder). Many tests wait on daemons, servers and subprocesses (the suite keeps about one of
# two cores busy), so three workers help even on 2 cores.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup browser demo dev test test-fast bench readme-frames cluster cluster-down clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	# The CPU build of torch first: an unpinned torch would pull several GB of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

setup: $(STAMP)

# Debian's Chromium for the UI test (no-op when present; prints what to run without root).
browser:
	./scripts/install-browser.sh

demo: setup
	$(BIN)/avatarops demo

# umask 077 in the one shell that starts the webserver and the daemon: the instance files they write
# (run history with face thumbnails) are owner-only; avatar_assets.pipeline.privacy tightens what already exists.
# avatar_assets.ops.instance_config gives dagster.yaml its defaults (telemetry and the UI's first-visit
# newsletter dialog off), also an existing one that lacks them.
dev: setup
	umask 077 && $(BIN)/python -m avatar_assets.ops.instance_config \
	  && $(BIN)/python -m avatar_assets.pipeline.privacy \
	  && $(BIN)/dagster dev -w workspace.yaml

# --durations: every run's log (CI's included) names its slowest tests, which the 25-minute budget is read from.
test: setup browser
	$(BIN)/python -m pytest $(XDIST) --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

# The production topology on loopback (scripts/cluster.py): Postgres, moto S3, a gRPC code server, the daemon,
# the webserver and CLUSTER_WORKERS Celery workers (CLUSTER_GPU_WORKERS of them gpu-only), state under .cluster/.
cluster: setup
	$(BIN)/python scripts/cluster.py up

cluster-down: setup
	$(BIN)/python scripts/cluster.py down

# The README's before/after face frames (docs/img/face_*.png).
readme-frames: setup
	$(BIN)/python scripts/readme_frames.py

clean:
	rm -rf $(VENV) .avatar_home .pytest_cache .cluster
