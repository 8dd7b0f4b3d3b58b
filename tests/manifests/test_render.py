"""Every overlay renders with kustomize and holds what the deployment promises.

Acceptance of the rendered objects by a real kube-apiserver (server-side dry-run apply) belongs to
the end-to-end suite; here the promises are checked on the rendered YAML itself.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import pytest

from tests import reviews
from tests.manifests.conftest import OVERLAYS, TLS_COMPONENT_CERTS, Documents
from webhook import certs, cli, guards, manifests, policy
from webhook.guards import guard_tamper

NAMESPACE = certs.DEFAULT_NAMESPACE
WITH_TLS_SECRET = ("enforce", "dry-run", "kind")
CLUSTER_SCOPED = ("Namespace", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding")
RBAC_KINDS = ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]


def of_kind(docs: Documents, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Documents, kind: str) -> dict[str, Any]:
    [found] = of_kind(docs, kind)
    return found


def pod_spec(docs: Documents) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: Documents) -> dict[str, Any]:
    [only] = pod_spec(docs)["containers"]
    return dict(only)


def serve_args(docs: Documents) -> argparse.Namespace:
    """The container's arguments parsed by the real command line: unknown flags fail here."""
    return cli.parser().parse_args(["serve", *container(docs)["args"]])


def test_every_overlay_renders_the_same_objects(rendered: dict[str, Documents]) -> None:
    common = {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "agent-guard"),
        ("ClusterRole", "agent-guard"),
        ("ClusterRoleBinding", "agent-guard"),
        ("Deployment", "agent-guard"),
        ("Service", "agent-guard"),
        ("PodDisruptionBudget", "agent-guard"),
        ("NetworkPolicy", "agent-guard"),
        ("ConfigMap", manifests.POLICY_CONFIGMAP),
        ("ValidatingWebhookConfiguration", manifests.CONFIGURATION_NAME),
        ("Secret", "agent-guard-tls"),
    }
    cert_manager = {
        ("Issuer", "agent-guard-selfsigned"),
        ("Certificate", "agent-guard-ca"),
        ("Issuer", "agent-guard-ca"),
        ("Certificate", "agent-guard-serving"),
    }
    for overlay in OVERLAYS:
        found = [(d["kind"], d["metadata"]["name"]) for d in rendered[overlay]]
        assert len(found) == len(set(found)), overlay
        expected = (
            common - {("Secret", "agent-guard-tls")} | cert_manager if overlay == "cert-manager" else common
        )
        assert set(found) == expected, overlay
        for doc in rendered[overlay]:
            if doc["kind"] not in CLUSTER_SCOPED:
                assert doc["metadata"]["namespace"] == NAMESPACE, (overlay, doc["kind"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(rendered: dict[str, Documents], overlay: str) -> None:
    labels = one(rendered[overlay], "Namespace")["metadata"]["labels"]
    for action in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{action}"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_highly_available(rendered: dict[str, Documents], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = {c["topologyKey"]: c for c in pod_spec(docs)["topologySpreadConstraints"]}
    by_node = spread["kubernetes.io/hostname"]
    assert by_node["maxSkew"] == 1 and by_node["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "topology.kubernetes.io/zone" in spread
    [preferred] = pod_spec(docs)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1 and budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["replicas"] - budget["maxUnavailable"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_restricted_and_can_only_read_rbac(rendered: dict[str, Documents], overlay: str) -> None:
    docs = rendered[overlay]
    pod = pod_spec(docs)
    # The token reaches the guard's own pods only (the account does not mount it by default).
    assert pod["automountServiceAccountToken"] is True
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "agent-guard"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    context = container(docs)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    assert container(docs)["resources"]["requests"].keys() == {"cpu", "memory"}
    assert "memory" in container(docs)["resources"]["limits"]
    assert not of_kind(docs, "RoleBinding") and not of_kind(docs, "Role")
    [rule] = one(docs, "ClusterRole")["rules"]
    assert rule == {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": RBAC_KINDS,
        "verbs": ["get", "list", "watch"],
    }
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "agent-guard",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agent-guard", "namespace": NAMESPACE}]
    assert str(serve_args(docs).rbac_source) == "in-cluster"


def test_the_guards_rbac_objects_are_the_ones_guard_tamper_protects(
    rendered: dict[str, Documents], shipped_policy: policy.Policy
) -> None:
    tamper = shipped_policy.guards["guard-tamper"]
    assert isinstance(tamper, guard_tamper.Settings)
    docs = rendered["enforce"]
    assert one(docs, "ClusterRole")["metadata"]["name"] in tamper.cluster_roles
    assert one(docs, "ClusterRoleBinding")["metadata"]["name"] in tamper.cluster_role_bindings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_https_on_the_serving_port(rendered: dict[str, Documents], overlay: str) -> None:
    main = container(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    args = serve_args(rendered[overlay])
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = main[probe]["httpGet"]
        assert get["path"] == path and get["scheme"] == "HTTPS"
        assert ports.get(get["port"], get["port"]) == args.port == 8443


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_leaves_time_for_reviews_in_flight(rendered: dict[str, Documents], overlay: str) -> None:
    docs = rendered[overlay]
    args = serve_args(docs)
    pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3, "endpoints need a few seconds to be removed before SIGTERM"
    assert args.shutdown_delay > 0
    webhook_timeout = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["timeoutSeconds"]
    assert args.shutdown_timeout >= webhook_timeout, "a review in flight may take the webhook timeout"
    assert (
        pre_stop + args.shutdown_delay + args.shutdown_timeout
        < pod_spec(docs)["terminationGracePeriodSeconds"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_and_certificate_are_mounted_for_hot_reload(
    rendered: dict[str, Documents], overlay: str
) -> None:
    docs = rendered[overlay]
    args = serve_args(docs)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    policy_mount, tls_mount = mounts[args.rules], mounts[args.cert_dir]
    for mount in (policy_mount, tls_mount):
        assert mount["readOnly"] is True
        assert "subPath" not in mount, "subPath mounts never see ConfigMap/Secret updates"
    assert volumes[policy_mount["name"]]["configMap"]["name"] == manifests.POLICY_CONFIGMAP
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == "agent-guard-tls"
    assert args.reload_interval > 0
    configmap = one(docs, "ConfigMap")
    assert not configmap["metadata"]["name"].startswith(f"{manifests.POLICY_CONFIGMAP}-"), "no name hash"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_configmap_is_the_shipped_policy(
    rendered: dict[str, Documents], overlay: str, tmp_path: Path, shipped_policy: policy.Policy
) -> None:
    data = one(rendered[overlay], "ConfigMap")["data"]
    assert data == {f.name: f.read_text() for f in policy.policy_files(reviews.RULES)}
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    mounted = policy.load(tmp_path)
    assert (mounted.mode, mounted.agents, dict(mounted.guards)) == (
        shipped_policy.mode,
        shipped_policy.agents,
        dict(shipped_policy.guards),
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_and_network_policy_expose_only_the_webhook_port(
    rendered: dict[str, Documents], overlay: str
) -> None:
    docs = rendered[overlay]
    [port] = one(docs, "Service")["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (443, 8443, "TCP")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    network = one(docs, "NetworkPolicy")["spec"]
    assert network["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(network["policyTypes"]) == ["Egress", "Ingress"]
    assert network["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    # Egress only to the Kubernetes API (Service port, and the apiserver's own after translation).
    assert network["egress"] == [
        {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    ]


@pytest.mark.parametrize("overlay", WITH_TLS_SECRET)
def test_webhook_configuration_is_rendered_from_the_policy(
    rendered: dict[str, Documents], overlay: str, tree: Path, shipped_policy: policy.Policy
) -> None:
    """The one source of truth: the rendered object equals what ``agent-guard manifests webhook`` makes."""
    hook_config = one(rendered[overlay], "ValidatingWebhookConfiguration")
    [hook] = hook_config["webhooks"]
    hook["clientConfig"]["caBundle"] = "".join(hook["clientConfig"]["caBundle"].split())
    expected = manifests.validating_webhook_configuration(
        shipped_policy,
        certs.ca_bundle(tree / TLS_COMPONENT_CERTS),
        service=(certs.DEFAULT_SERVICE, NAMESPACE),
    )
    assert hook_config["webhooks"] == expected["webhooks"]
    assert hook["matchConditions"] and hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    operations = {op for rule in hook["rules"] for op in rule["operations"]}
    needed = {op for family in guards.families() for rule in family.rules for op in rule.operations}
    assert operations == needed  # CONNECT appears as soon as a guard family asks for it


@pytest.mark.parametrize("overlay", WITH_TLS_SECRET)
def test_tls_secret_comes_from_the_cert_dir(rendered: dict[str, Documents], overlay: str, tree: Path) -> None:
    secret = one(rendered[overlay], "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    paths = certs.Paths(tree / TLS_COMPONENT_CERTS)
    decoded = {key: base64.b64decode("".join(value.split())) for key, value in secret["data"].items()}
    assert decoded == {
        "tls.crt": paths.cert.read_bytes(),
        "tls.key": paths.key.read_bytes(),
        "ca.crt": paths.ca.read_bytes(),
    }


def test_dry_run_overlay_and_only_it_forces_dry_run(rendered: dict[str, Documents]) -> None:
    for overlay in OVERLAYS:
        assert serve_args(rendered[overlay]).mode == ("dry-run" if overlay == "dry-run" else None), overlay


def test_kind_overlay_runs_the_locally_loaded_image(rendered: dict[str, Documents]) -> None:
    main = container(rendered["kind"])
    assert main["image"] == "agent-guard:dev" and main["imagePullPolicy"] == "Never"
    assert container(rendered["enforce"])["imagePullPolicy"] == "IfNotPresent"


def test_cert_manager_overlay_issues_and_injects_the_certificate(rendered: dict[str, Documents]) -> None:
    docs = rendered["cert-manager"]
    certificates = {c["metadata"]["name"]: c["spec"] for c in of_kind(docs, "Certificate")}
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(docs, "Issuer")}
    serving = certificates["agent-guard-serving"]
    tls_volume = next(v for v in pod_spec(docs)["volumes"] if "secret" in v)
    assert serving["secretName"] == tls_volume["secret"]["secretName"]
    assert serving["dnsNames"] == [
        n for n in certs.dns_names(certs.DEFAULT_SERVICE, NAMESPACE) if n != "localhost"
    ]
    assert "server auth" in serving["usages"]
    ca_issuer = issuers[serving["issuerRef"]["name"]]
    assert certificates["agent-guard-ca"]["secretName"] == ca_issuer["ca"]["secretName"]
    assert certificates["agent-guard-ca"]["isCA"] is True
    assert "selfSigned" in issuers[certificates["agent-guard-ca"]["issuerRef"]["name"]]
    hook_config = one(docs, "ValidatingWebhookConfiguration")
    assert hook_config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/agent-guard-serving"
    )
    assert "caBundle" not in hook_config["webhooks"][0]["clientConfig"]  # the CA injector fills it
