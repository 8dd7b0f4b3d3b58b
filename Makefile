# kube-agent-guard: everything a newcomer needs is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
KUBECTL ?= kubectl
DOCKER ?= docker
KIND ?= kind
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= agent-guard:$(VERSION)
OVERLAY ?= enforce
NAMESPACE := agent-guard-system
DEPLOY_CERTS := manifests/components/tls-secret/certs

.PHONY: install run test unit integration e2e e2e-mcp e2e-node demo lint certs bench clean manifests deploy-certs deploy image e2e-kind help e2e-matrix

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
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy

unit: $(STAMP) ## the fast loop: unit + API tests (guards, policy, tools, both review contracts), seconds
	$(BIN)/pytest tests/unit tests/api $(ARGS)

integration: $(STAMP) ## real `agent-guard serve` over TLS (reload, shutdown, workers) + rendered manifests (kustomize needs Go)
	$(BIN)/pytest tests/tls tests/manifests $(ARGS)

e2e: $(STAMP) ## only the end-to-end suite (real kube-apiserver + etcd, built on first use)
	$(BIN)/pytest -m e2e $(ARGS)

e2e-mcp: $(STAMP) ## the MCP matrix: real MCP servers (npm) through the MCP SDK against the guarded cluster
	$(BIN)/pytest -m mcp $(ARGS)

e2e-matrix: $(STAMP) ## the end-to-end suite against kube-apiserver 1.30, 1.32, 1.34, 1.37 (builds each once; docs/versions.md)
	$(BIN)/python -m tests.e2e.matrix $(ARGS)

bench: $(STAMP) ## webhook vs a no-op floor in the same run, engine micro-bench, e2e cost (needs Go); ~5 min
	$(BIN)/python -m bench.run --json bench/results.json $(ARGS)

demo: $(STAMP) ## real kube-apiserver + etcd + the guard; prints kubeconfigs and commands to try (Ctrl-C stops)
	$(BIN)/python -m tests.e2e.demo $(ARGS)

test: lint ## lint, then the whole suite: unit, API, integration and end to end (first run builds Kubernetes), then the real node
	$(BIN)/pytest $(ARGS)
	$(MAKE) --no-print-directory e2e-node ARGS=

# The attack table and benign agent work, then tests/e2e/node, on a real node with the guard installed
# in-cluster from its own image (root; Debian packages installed on first use; docs/testing.md).
E2E_NODE_TESTS := tests/e2e/test_attacks.py tests/e2e/test_benign.py tests/e2e/node
e2e-node: $(STAMP) ## end to end on a real node: controllers, kubelet, the guard from its image (root)
	AGENT_GUARD_E2E_NODE=1 $(BIN)/pytest -m e2e $(E2E_NODE_TESTS) $(ARGS)

manifests: $(STAMP) ## regenerate manifests/base/{webhook.yaml,policy/}, manifests/authz/ and the Helm chart from rules/ (commit the result)
	$(BIN)/agent-guard manifests webhook --rules rules --without-ca-bundle --out manifests/base/webhook.yaml
	$(BIN)/agent-guard manifests policy --rules rules --out manifests/base/policy
	$(BIN)/agent-guard manifests authz --rules rules --ca-file /etc/kubernetes/agent-guard/ca.crt --out manifests/authz
	$(BIN)/agent-guard manifests chart --rules rules --manifests manifests --out charts/kube-agent-guard

deploy-certs: $(STAMP) ## CA + serving certificate for the in-cluster Service, where the tls-secret component reads them
	$(BIN)/agent-guard certs --out $(DEPLOY_CERTS) --service agent-guard --namespace $(NAMESPACE) $(ARGS) >/dev/null

deploy: manifests deploy-certs ## install into the current kubectl context (OVERLAY=enforce|dry-run|kind|cert-manager)
	$(KUBECTL) apply --server-side -k manifests/overlays/$(OVERLAY)
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/agent-guard --timeout=180s

image: ## build the container image $(IMAGE) (needs a Docker engine)
	$(DOCKER) build -t $(IMAGE) .

e2e-kind: $(STAMP) ## the end-to-end suite against a kind cluster (needs Docker and kind; KEEP=1 keeps the cluster)
	KUBECTL=$(KUBECTL) DOCKER=$(DOCKER) KIND=$(KIND) tests/e2e/kind.sh $(ARGS)

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

clean: ## remove .venv and tool caches in the tree (not the Go-built binaries in ~/.cache/kube-agent-guard)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
