#!/usr/bin/env bash
# make e2e-kind: the end-to-end suite against a kind cluster instead of local processes.
#   create the cluster -> build the image and load it into the nodes -> deploy the kind overlay
#   -> wait for the rollout -> run `pytest -m e2e` with AGENT_GUARD_E2E_KUBECONFIG pointing at it.
# Needs Docker (a running engine), kind and kubectl on PATH. KEEP=1 keeps the cluster afterwards;
# KIND_CLUSTER names it (default agent-guard-e2e); KIND_NODE_IMAGE picks the Kubernetes version.
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster="${KIND_CLUSTER:-agent-guard-e2e}"
image="agent-guard:dev"  # what manifests/overlays/kind deploys, with imagePullPolicy: Never
workdir=".e2e/kind"
kubeconfig="$workdir/kubeconfig"
bin=".venv/bin"
kubectl="${KUBECTL:-kubectl}"
docker="${DOCKER:-docker}"
kind="${KIND:-kind}"

for tool in "$docker" "$kind" "$kubectl"; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is not installed (needs Docker, kind and kubectl)" >&2; exit 2; }
done
"$docker" info >/dev/null 2>&1 || { echo "e2e-kind: no Docker engine is reachable ($docker info failed)" >&2; exit 2; }

mkdir -p "$workdir"
if ! "$kind" get clusters | grep -qx "$cluster"; then
  "$kind" create cluster --name "$cluster" --config tests/e2e/kind-config.yaml --wait 120s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then "$kind" delete cluster --name "$cluster"; fi
}
trap cleanup EXIT
"$kind" get kubeconfig --name "$cluster" > "$kubeconfig"
export KUBECONFIG="$kubeconfig"

make image IMAGE="$image" DOCKER="$docker"
"$kind" load docker-image "$image" --name "$cluster"

make manifests deploy-certs ARGS=
"$kubectl" apply --server-side -k manifests/overlays/kind
"$kubectl" -n agent-guard-system rollout status deployment/agent-guard --timeout=180s

# The suite registers nothing itself when given a cluster: the guard above is what it exercises.
AGENT_GUARD_E2E_KUBECONFIG="$PWD/$kubeconfig" "$bin/pytest" -m e2e "$@"
