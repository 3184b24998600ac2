# Two commands set everything up on a fresh machine:
#   make run    the embedded default (REST :8080, gRPC :50051, SQLite in ./var, demo data)
#   make test   every test
# Both create .venv and install what they need into it (Go tools go to .venv/bin too).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

GHZ_VERSION := v0.121.0
GRPCURL_VERSION := v1.9.4

.PHONY: run test lint format protos check-protos buf bench bench-quick tools venv clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or later is needed"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed

$(BIN)/ghz: | $(BIN)/python
	GOBIN=$(CURDIR)/$(BIN) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(BIN)/grpcurl: | $(BIN)/python
	GOBIN=$(CURDIR)/$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

tools: $(BIN)/ghz $(BIN)/grpcurl

run: venv
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

buf: venv
	$(BIN)/python protos/generate.py --check
	$(BIN)/buf lint
	$(BIN)/buf build -o /dev/null

bench: venv tools
	$(BIN)/python -m bench

bench-quick: venv tools
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build var .pytest_cache .mypy_cache .ruff_cache .hypothesis
