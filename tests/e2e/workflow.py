"""An agent's ordinary day, as raw requests: what ``test_benign`` drives through the typed client.

The RBAC scenarios need the same operations replayable by any identity, under fresh object names,
with every reply (status, ``Audit-Id``) kept: the replies are the audit log ``rbac suggest`` reads.
"""

from __future__ import annotations

from tests.e2e import attacks, kube

MERGE = "application/merge-patch+json"


def benign(client: kube.Client, admin: kube.Client, namespace: str, name: str, made: str) -> list[kube.Reply]:
    """Deploy ``name`` with a Service and a ConfigMap, patch it, scale it, list and delete a pod, create
    and label the namespace ``made`` (as ``test_benign`` does). Returns every reply, in order."""
    admin.ok(kube.Request("POST", f"/api/v1/namespaces/{namespace}/pods", attacks.pod(f"stale-{name}")))
    core = f"/api/v1/namespaces/{namespace}"
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    service = {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    label = {"metadata": {"labels": {"team": name}}}
    requests = [
        kube.Request("POST", deployments, attacks.deployment(name)),
        kube.Request("POST", f"{core}/services", service),
        kube.Request("POST", f"{core}/configmaps", {"metadata": {"name": name}, "data": {"mode": "blue"}}),
        kube.Request("PATCH", f"{core}/configmaps/{name}", {"data": {"mode": "green"}}, content_type=MERGE),
        kube.Request("PATCH", f"{deployments}/{name}/scale", {"spec": {"replicas": 3}}, content_type=MERGE),
        kube.Request("GET", f"{core}/pods"),
        kube.Request("DELETE", f"{core}/pods/stale-{name}"),
        kube.Request("POST", "/api/v1/namespaces", {"metadata": {"name": made}}),
        kube.Request("PATCH", f"/api/v1/namespaces/{made}", label, content_type=MERGE),
    ]
    return [client.request(request) for request in requests]
