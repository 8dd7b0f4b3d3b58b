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

.PHONY: install run test unit e2e e2e-node demo lint certs bench clean manifests deploy-certs deploy image e2e-kind

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

unit: $(STAMP) ## everything but the end-to-end suite
	$(BIN)/pytest -m 'not e2e' $(ARGS)

e2e: $(STAMP) ## only the end-to-end suite (real kube-apiserver + etcd, built on first use)
	$(BIN)/pytest -m e2e $(ARGS)

bench: $(STAMP) ## webhook vs a no-op floor in the same run, engine micro-bench, e2e cost (needs Go); ~5 min
	$(BIN)/python -m bench.run --json bench/results.json $(ARGS)

demo: $(STAMP) ## real kube-apiserver + etcd + the guard; prints kubeconfigs and commands to try (Ctrl-C stops)
	$(BIN)/python -m tests.e2e.demo $(ARGS)

test: lint ## lint, then the whole suite including end to end, then the real-node suite
	$(BIN)/pytest $(ARGS)
	$(MAKE) --no-print-directory e2e-node ARGS=

# The attack table and benign agent work, then tests/e2e/node, on a real node with the guard installed
# in-cluster from its own image (root; Debian packages installed on first use; docs/testing.md).
E2E_NODE_TESTS := tests/e2e/test_attacks.py tests/e2e/test_benign.py tests/e2e/node
e2e-node: $(STAMP) ## end to end on a real node: controllers, kubelet, the guard from its image (root)
	AGENT_GUARD_E2E_NODE=1 $(BIN)/pytest -m e2e $(E2E_NODE_TESTS) $(ARGS)

manifests: $(STAMP) ## regenerate manifests/base/{webhook.yaml,policy/} from rules/ (commit the result)
	$(BIN)/agent-guard manifests webhook --rules rules --without-ca-bundle --out manifests/base/webhook.yaml
	$(BIN)/agent-guard manifests policy --rules rules --out manifests/base/policy

deploy-certs: $(STAMP) ## CA + serving certificate for the in-cluster Service, where the tls-secret component reads them
	$(BIN)/agent-guard certs --out $(DEPLOY_CERTS) --service agent-guard --namespace $(NAMESPACE) $(ARGS) >/dev/null

deploy: manifests deploy-certs ## install into the current kubectl context (OVERLAY=enforce|dry-run|kind|cert-manager)
	$(KUBECTL) apply --server-side -k manifests/overlays/$(OVERLAY)
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/agent-guard --timeout=180s

image: ## build the container image $(IMAGE) (needs a Docker engine)
	$(DOCKER) build -t $(IMAGE) .

e2e-kind: $(STAMP) ## the suite against a kind cluster, both webhooks (docs/kind.md; KEEP=1 keeps the cluster)
	tests/e2e/kind.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
