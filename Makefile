# Two commands set everything up on a fresh machine:
#   make run    the embedded default (REST :8080, gRPC :50051, SQLite in ./var, demo data)
#   make test   every test
# Both create .venv and install what they need into it (Go tools go to .venv/bin too): `make run`
# the runtime dependencies alone, `make test` the development and benchmark ones as well, each at
# the exact versions of its lock file (requirements.lock, requirements-dev.lock; `make lock`).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

GHZ_VERSION := v0.121.0
GRPCURL_VERSION := v1.9.4

.PHONY: run test lint format protos check-protos proto-deps buf bench bench-quick bench-grpc-gateway tools venv venv-run lock clean

# Exact versions, with hashes: the runtime set (make run, the container image) and the whole set
# (make test, lint, bench), which agree on every package they share.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP_INSTALL := $(BIN)/python -m pip install --quiet

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or later is needed"'
	$(PYTHON) -m venv $(VENV)

# The project itself goes in editable and without dependencies: the lock files bring those. `pip
# check` fails when pyproject.toml names a runtime dependency the lock misses (then: make lock).
$(VENV)/.installed-run: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) --require-hashes -r $(LOCK)
	$(PIP_INSTALL) --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# `pip check` covers the runtime dependencies only; a dry run of the extras, offline, fails when
# pyproject.toml names a development or benchmark package the lock misses.
$(VENV)/.installed: pyproject.toml $(LOCK) $(DEV_LOCK) $(VENV)/.installed-run
	$(PIP_INSTALL) --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip check
	$(PIP_INSTALL) --dry-run --no-index --no-build-isolation -e '.[dev,bench]' \
	  || { echo 'pyproject.toml names a package that $(DEV_LOCK) lacks: run make lock' >&2; exit 1; }
	touch $@

venv-run: $(VENV)/.installed-run
venv: $(VENV)/.installed

# Refresh both lock files from pyproject.toml, keeping every pin that still fits
# (`make lock LOCK_ARGS=--upgrade` moves all to their newest; `--upgrade-package NAME` one).
# pip-tools runs from a scratch venv: it is no dependency of the project. The whole set is resolved
# first, then the runtime set within it, so that both agree. PIP_FIND_LINKS and the like of this
# machine stay out of the files (--no-emit-*); hashes cover every platform's files of a version.
LOCK_VENV := build/lock-venv
LOCK_ARGS ?=
PIP_COMPILE = CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host $(LOCK_ARGS)

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip-tools
	$(PIP_COMPILE) --extra dev --extra bench --output-file $(DEV_LOCK) pyproject.toml
	$(PIP_COMPILE) --constraint $(DEV_LOCK) --output-file $(LOCK) pyproject.toml

$(BIN)/ghz: | $(BIN)/python
	GOBIN=$(CURDIR)/$(BIN) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(BIN)/grpcurl: | $(BIN)/python
	GOBIN=$(CURDIR)/$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

tools: $(BIN)/ghz $(BIN)/grpcurl

run: venv-run
	$(BIN)/hypertrack-gateway serve

test: venv tools
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate gateway/gen from protos/ (the only way generated code comes to be).
protos: venv
	$(BIN)/python protos/generate.py

check-protos: venv
	$(BIN)/python protos/generate.py --check

# Lay out build/googleapis (google/api/*.proto from the installed googleapis-common-protos), which
# buf.yaml names as a module: after this, a bare `.venv/bin/buf lint` works too.
proto-deps: venv
	$(BIN)/python -c 'import sys; sys.path.insert(0, "protos"); import generate; generate.copy_googleapis()'

buf: proto-deps
	$(BIN)/python protos/generate.py --check
	$(BIN)/buf lint
	$(BIN)/buf build -o /dev/null

# The benchmark's grpc-gateway row: handlers generated from protos/ by go-installed protoc plugins and
# built with Go under build/grpcgateway (bench/gogateway.py; nothing of it is committed). Cached by a
# hash of its inputs: after the first build this takes a moment. `python -m bench` builds it too.
bench-grpc-gateway: venv
	$(BIN)/python -m bench.gogateway build

bench: venv tools bench-grpc-gateway
	$(BIN)/python -m bench

bench-quick: venv tools bench-grpc-gateway
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build var .pytest_cache .mypy_cache .ruff_cache .hypothesis
