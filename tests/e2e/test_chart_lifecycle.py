"""The Helm chart's install, upgrade and uninstall against a real kube-apiserver (docs/upgrade.md).

The scenario runs on a control plane of its own (etcd + kube-apiserver from ``controlplane``, Node and
RBAC authorizers only): the session's cluster already has a ValidatingWebhookConfiguration called
``agent-guard`` (the suite's registration of its local guard), which helm would rightly refuse to
adopt. There is no kubelet, so the guard's pods never run: exactly the state of a cluster whose guard
is gone while its webhook configuration is left behind. What it proves, with the real apiserver:

1. ``helm install`` creates every object ``helm template`` renders, and the apiserver accepts them.
2. With the configuration in place and no guard answering, an agent's write is denied
   (``failurePolicy: Fail``) while the admin's is not (``matchConditions``): why uninstall removes
   the configuration first.
3. ``helm upgrade`` with a policy change updates the policy ConfigMap and re-renders the webhook's
   ``matchConditions`` and rules: the live object equals what the guard's own renderer makes of the
   policy the chart mounted.
4. ``helm uninstall`` deletes the ValidatingWebhookConfiguration before any other object (read back
   from the apiserver's audit log), after which the agent may write again and nothing of the release
   is left.

The upgrade under load with running replicas (0 failed admin requests) is the real-node suite's
``tests/e2e/node/test_chart_release.py``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.e2e import cluster, kube
from tests.e2e.conftest import unavailable
from tests.e2e.controlplane import binaries, processes
from tests.manifests import helm_binary
from webhook import certs, manifests, policy

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.local_only(
        reason="helm installs the chart into a control plane the scenario starts itself (etcd + "
        "kube-apiserver from controlplane, next to the session's); an existing cluster already runs the "
        "guard of manifests/overlays/kind, which helm would rightly refuse to adopt"
    ),
]

CHART = Path(__file__).resolve().parents[2] / "charts" / "kube-agent-guard"
NAMESPACE = certs.DEFAULT_NAMESPACE
RELEASE = "agent-guard"
WEBHOOK_PATH = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{RELEASE}"


def authorization_without_guard() -> str:
    """Node and RBAC only, in the AuthorizationConfiguration version of the release under test."""
    rendered = manifests.authorization_configuration(
        policy.load(reviews.RULES), kubernetes=binaries.kubernetes_version()
    )
    return yaml.safe_dump(
        {
            "apiVersion": rendered["apiVersion"],
            "kind": "AuthorizationConfiguration",
            "authorizers": [{"type": "Node", "name": "node"}, {"type": "RBAC", "name": "rbac"}],
        }
    )


@dataclass
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path
    values: list[str]

    def __call__(self, *args: str) -> str:
        return helm_binary.run(self.binary, self.home, args, kubeconfig=self.kubeconfig)

    def template(self, *extra: str) -> list[dict[str, Any]]:
        text = self("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *self.values, *extra)
        return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Plane:
    target: cluster.Local
    admin: kube.Client
    agent: kube.Client
    helm: Helm


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    if cluster.mode() != "local":
        pytest.skip("the chart lifecycle runs on a control plane of its own, started only in local mode")
    try:
        found = binaries.ensure_all()
        helm = helm_binary.ensure()
    except binaries.BuildError as exc:
        unavailable(str(exc))
    workdir = tmp_path_factory.mktemp("chart-lifecycle")
    authorization = workdir / "authorization.yaml"
    authorization.write_text(authorization_without_guard())
    certificates = workdir / "certs"
    certs.generate(certificates, certs.DEFAULT_SERVICE, NAMESPACE)
    files = f"tls.cert={certificates}/tls.crt,tls.key={certificates}/tls.key,tls.ca={certificates}/ca.crt"
    with processes.running(
        workdir / "controlplane", found["etcd"], found["kube-apiserver"], authorization
    ) as running:
        target = cluster.Local(running, description="chart lifecycle kube-apiserver + etcd")
        admin = kube.admin(target)
        agent = kube.service_account(
            admin, "mcp-system", "chart-agent", "cluster-admin"
        )  # an agent by policy
        config = kube.kubeconfig(target, "admin", target.admin_token, workdir / "kubeconfig")
        yield Plane(target, admin, agent, Helm(helm, workdir / "helm-home", config, ["--set-file", files]))


def write_configmap(client: kube.Client, namespace: str) -> kube.Reply:
    body = {"metadata": {"name": f"note-{secrets.token_hex(3)}"}, "data": {"k": "v"}}
    return client.request(kube.Request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body))


def path_of(obj: dict[str, Any]) -> str:
    group, _, version = obj["apiVersion"].rpartition("/")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    plural = {"NetworkPolicy": "networkpolicies", "PodDisruptionBudget": "poddisruptionbudgets"}.get(
        obj["kind"], obj["kind"].lower() + "s"
    )
    namespace = obj["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural}/{obj['metadata']['name']}"


def live_webhook_is_the_rendered_one(plane: Plane, rendered: list[dict[str, Any]], tmp: Path) -> None:
    """The live configuration equals the guard's renderer applied to the policy the chart mounted."""
    [configmap] = [d for d in rendered if d["kind"] == "ConfigMap"]
    live_map = plane.admin.ok(kube.Request("GET", path_of(configmap))).body
    assert live_map["data"] == configmap["data"]
    rules = tmp / f"policy-{secrets.token_hex(3)}"
    rules.mkdir()
    for name, text in live_map["data"].items():
        (rules / name).write_text(text)
    mounted = policy.load(rules)
    live = plane.admin.ok(kube.Request("GET", WEBHOOK_PATH)).body
    [hook] = live["webhooks"]
    bundle = hook["clientConfig"]["caBundle"]
    expected = manifests.validating_webhook_configuration(mounted, bundle, service=("agent-guard", NAMESPACE))
    [wanted] = expected["webhooks"]
    for key, value in wanted.items():  # the apiserver adds defaults (selectors); ours must all be there
        assert hook[key] == value, key


def audit_deletes(log: Path | None) -> list[str]:
    """Resources helm deleted, in the order the apiserver completed the deletes (from its audit log)."""
    assert log is not None
    found = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if (
            event.get("verb") == "delete"
            and event.get("stage") == "ResponseComplete"
            and str(event.get("userAgent", "")).startswith("Helm/")
        ):
            found.append(event["objectRef"]["resource"])
    return found


def test_install_upgrade_uninstall(plane: Plane, tmp_path: Path) -> None:
    kube.ensure_namespace(plane.admin, "work")
    assert write_configmap(plane.agent, "work").status == 201, "before the install the agent may write"

    # 1. install: everything helm renders is created and accepted.
    plane.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", *plane.helm.values
    )
    rendered = plane.helm.template()
    for obj in rendered:
        assert plane.admin.request(kube.Request("GET", path_of(obj))).status == 200, path_of(obj)
    # --create-namespace made it first (helm keeps its release record there); the chart's Namespace
    # object then added the Pod Security labels.
    labels = plane.admin.ok(kube.Request("GET", f"/api/v1/namespaces/{NAMESPACE}")).body["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    live_webhook_is_the_rendered_one(plane, rendered, tmp_path)

    # 2. the configuration without a guard behind it: agents' writes fail closed, the admin's pass.
    denied = write_configmap(plane.agent, "work")
    assert denied.status >= 400 and "validate.agent-guard.io" in denied.message, denied
    assert write_configmap(plane.admin, "work").status == 201

    # 3. upgrade with a policy change: one more agent, a guard off.
    change = [
        "--set",
        "policy.agents.usernames={jane@example.com}",
        "--set",
        "policy.guards.secret-access.mode=off",
    ]
    plane.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *plane.helm.values, *change)
    upgraded = plane.helm.template(*change)
    live_webhook_is_the_rendered_one(plane, upgraded, tmp_path)
    [hook] = plane.admin.ok(kube.Request("GET", WEBHOOK_PATH)).body["webhooks"]
    assert '"jane@example.com"' in hook["matchConditions"][0]["expression"]
    history = json.loads(plane.helm("history", RELEASE, "--namespace", NAMESPACE, "--output", "json"))
    assert [entry["revision"] for entry in history] == [1, 2]

    # 4. uninstall: the webhook configuration goes first, then the rest.
    plane.helm("uninstall", RELEASE, "--namespace", NAMESPACE)
    deleted = audit_deletes(plane.target.audit_log)
    assert deleted and deleted[0] == "validatingwebhookconfigurations", deleted
    assert {"deployments", "configmaps", "secrets", "services", "namespaces"} <= set(deleted), deleted
    assert write_configmap(plane.agent, "work").status == 201, "after the uninstall the agent may write"
    for obj in upgraded:
        reply = plane.admin.request(kube.Request("GET", path_of(obj)))
        # No controller-manager here finalizes the namespace: it stays Terminating, its content is gone.
        if obj["kind"] == "Namespace" and reply.status == 200:
            assert reply.body["status"]["phase"] == "Terminating"
        else:
            assert reply.status == 404, path_of(obj)
