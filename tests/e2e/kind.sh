#!/usr/bin/env bash
# make e2e-kind: the end-to-end suite against a kind cluster, in kubeconfig mode, both webhooks wired.
#   a Docker engine (the caller's, or its own: tests/e2e/kind/engine.py) -> kind, kubectl from the Go
#   module proxy (cached in ~/.cache/kube-agent-guard) -> certificates, the apiserver's client
#   certificate and admission configuration, the authorizer's files -> the cluster
#   (tests/e2e/kind-config.yaml: kubeadm patches put both into kube-apiserver) -> the guard's image
#   from the Dockerfile, loaded into the nodes -> manifests/overlays/kind + components/client-auth
#   -> `pytest -m "e2e and not local_only"` with AGENT_GUARD_E2E_KUBECONFIG pointing at the cluster.
# Afterwards, also on failure, the cluster is deleted and an engine this script started is stopped;
# KEEP=1 keeps both (then `KEEP=0 tests/e2e/kind.sh --co -q` cleans up).
# KIND_CLUSTER names the cluster (default agent-guard-e2e); KIND_NODE_IMAGE picks a node image
# (default: one made here, offline, tests/e2e/kind/nodeimage.py; see docs/kind.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster="${KIND_CLUSTER:-agent-guard-e2e}"
image="agent-guard:dev"  # what manifests/overlays/kind deploys, with imagePullPolicy: Never
workdir="$PWD/.e2e/kind"
kubeconfig="$workdir/kubeconfig"
bin=".venv/bin"
py="$bin/python"
say() { echo "e2e-kind: $*" >&2; }
stamp() { date +%s; }
minutes() { awk -v s="$1" -v e="$(stamp)" 'BEGIN { printf "%.1f min", (e - s) / 60 }'; }

mkdir -p "$workdir"
exec 9>"$workdir/.lock"  # one run per worktree: a second one would share the engine directory
flock -n 9 || { say "another make e2e-kind runs in this worktree ($workdir)"; exit 2; }
t=$(stamp)
kind="${KIND:-$("$py" -m tests.e2e.kind.tools kind)}"
kubectl="${KUBECTL:-$("$py" -m tests.e2e.kind.tools kubectl)}"
say "tools ready ($(minutes "$t")): $kind, $kubectl"

# The guard's image, built from the project's Dockerfile by the image build's own short-lived engine
# (tests/e2e/controlplane/images.py, shared with make e2e-node; cached by its inputs), before this
# script's engine starts: that build's teardown checks the host, which a running cluster changes.
t=$(stamp)
archive="$("$py" -c 'import sys
from tests.e2e.controlplane import images
print(images.guard_archive(sys.argv[1], lambda m: print(m, file=sys.stderr)))' "$image")"
say "image archive $archive ($(minutes "$t"))"

t=$(stamp)
DOCKER_HOST="$("$py" -m tests.e2e.kind.engine start "$workdir/engine")"
export DOCKER_HOST
docker="${DOCKER:-docker}"
say "Docker engine at $DOCKER_HOST ($(minutes "$t"))"

created=0
cleanup() {
  local status=$?
  if [[ "${KEEP:-0}" == 1 ]]; then
    say "KEEP=1: cluster $cluster and DOCKER_HOST=$DOCKER_HOST left running"
  else
    if [[ $created == 1 ]]; then "$kind" delete cluster --name "$cluster" || status=1; fi
    "$py" -m tests.e2e.kind.engine stop "$workdir/engine" || status=1
  fi
  exit "$status"
}
trap cleanup EXIT

# The guard's certificates, and the authorizer's files for the kind control plane: the apiserver
# dials the guard's Service on its fixed ClusterIP (components/fixed-cluster-ip) and checks the
# Service's name in the certificate. The apiserver presents a client certificate of its own to both
# webhooks (admission: the AdmissionConfiguration apiserver-client writes; authorization: the
# authorizer's kubeconfig), and the guard serves reviews only to it (components/client-auth, whose
# client-ca.crt is copied from here).
# A cluster kept from an earlier run (KEEP=1) has these directories mounted and reads its client
# certificate from there on every connection: they are written only for a cluster about to be created.
make manifests deploy-certs ARGS=
etc=/etc/kubernetes/agent-guard  # where the control-plane node sees "$workdir/authz"
if ! "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
  rm -rf "$workdir/authz" "$workdir/audit"
  "$bin/agent-guard" apiserver-client --out "$workdir/authz" --apiserver-dir "$etc" \
    --host agent-guard.agent-guard-system.svc
  "$bin/agent-guard" manifests authz --rules rules --cert-dir manifests/components/tls-secret/certs \
    --url https://10.96.0.250 --tls-server-name agent-guard.agent-guard-system.svc \
    --client-cert "$etc/apiserver-client.crt" --client-key "$etc/apiserver-client.key" \
    --kubeconfig-path "$etc/authz-kubeconfig.yaml" --out "$workdir/authz"
fi
mkdir -p manifests/components/client-auth/certs
cp "$workdir/authz/client-ca.crt" manifests/components/client-auth/certs/client-ca.crt

# The node image: KIND_NODE_IMAGE (e.g. a kindest/node from a registry: the three nodes of
# kind-config.yaml with kindnetd), else the one made here from Debian packages and the suite's own
# builds (tests/e2e/kind/nodeimage.py, cached): one node, the reference CNI plugins (docs/kind.md).
t=$(stamp)
if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
  node_image="$KIND_NODE_IMAGE"
  "$py" -m tests.e2e.kind.config "$workdir/authz" "$workdir/kind-config.yaml"
else
  node_image="$("$py" -m tests.e2e.kind.nodeimage)"
  "$py" -m tests.e2e.kind.config "$workdir/authz" "$workdir/kind-config.yaml" --local
fi
say "node image $node_image ($(minutes "$t"))"

t=$(stamp)
if ! "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
  created=1
  "$kind" create cluster --name "$cluster" --config "$workdir/kind-config.yaml" --wait 180s \
    --kubeconfig "$kubeconfig" --image "$node_image"
fi
"$kind" get kubeconfig --name "$cluster" > "$kubeconfig"
export KUBECONFIG="$kubeconfig"
say "cluster $cluster ready ($(minutes "$t"))"

# The guard's image into the engine and the nodes.
t=$(stamp)
loaded="$("$docker" load --input "$archive" | sed -n 's/^Loaded image: //p' | head -1)"
[[ "$loaded" == "$image" ]] || "$docker" tag "$loaded" "$image"
"$kind" load docker-image "$image" --name "$cluster"
say "image $image loaded ($(minutes "$t"))"

# manifests/overlays/kind, with components/client-auth on top (the apiserver presents its client
# certificate to both webhooks, wired above; the guard then serves reviews to nothing else).
t=$(stamp)
overlay="$workdir/overlay"
mkdir -p "$overlay"
cat > "$overlay/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../manifests/overlays/kind]
components: [../../../manifests/components/client-auth]
EOF
# = apply --server-side -k manifests/overlays/kind + client-auth. --force-conflicts: on a cluster kept
# with KEEP=1 a scenario may have re-created the webhook configuration (another field manager).
"$kubectl" apply --server-side --force-conflicts -k "$overlay"
"$kubectl" -n agent-guard-system rollout status deployment/agent-guard --timeout=180s
say "guard installed ($(minutes "$t"))"

# The suite registers nothing itself when given a cluster: the guard above is what it exercises,
# as admission webhook and (through the control plane's --authorization-config) as authorizer.
# Scenarios marked local_only need the suite's own control plane or guard processes of their own
# (each says why); they run in make test, and are deselected here, by name: the suite's summary
# lists them with their reasons ("deselected here: local_only").
t=$(stamp)
say "deselecting the local_only scenarios (they run in make test; listed with their reasons at the end)"
AGENT_GUARD_E2E_AUTHORIZER=1 AGENT_GUARD_E2E_AUDIT_LOG="$workdir/audit/audit.log" \
  AGENT_GUARD_E2E_KUBECONFIG="$kubeconfig" "$bin/pytest" -m "e2e and not local_only" "$@"
say "suite done ($(minutes "$t"))"
