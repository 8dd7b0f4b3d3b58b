# kube-agent-guard: everything a newcomer needs is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test unit e2e demo lint certs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the project (editable) with dev tools

run: $(STAMP) ## serve on https://0.0.0.0:8443 with dev certs (created on first use) and rules/
	$(BIN)/agent-guard serve $(ARGS)

certs: $(STAMP) ## (re)create dev certificates in certs/ (keeps a valid pair; ARGS=--force to replace)
	$(BIN)/agent-guard certs --out certs $(ARGS)

lint: $(STAMP) ## ruff + mypy --strict
	$(BIN)/ruff check webhook tests
	$(BIN)/ruff format --check webhook tests
	$(BIN)/mypy

unit: $(STAMP) ## everything but the end-to-end suite
	$(BIN)/pytest -m 'not e2e' $(ARGS)

e2e: $(STAMP) ## only the end-to-end suite (real kube-apiserver + etcd, built on first use)
	$(BIN)/pytest -m e2e $(ARGS)

demo: $(STAMP) ## real kube-apiserver + etcd + the guard; prints kubeconfigs and commands to try (Ctrl-C stops)
	$(BIN)/python -m tests.e2e.demo $(ARGS)

test: lint ## lint, then the whole suite including end to end
	$(BIN)/pytest $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
