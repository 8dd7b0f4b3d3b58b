"""The guard disturbed while agents and admins keep working (``load.steady``: 24 requests/s, >= 30 s).

- ``kubectl rollout restart`` (the same patch kubectl sends: a ``restartedAt`` template annotation)
  and the deletion of one guard Pod: 0 failed admin requests, no attack admitted, and the number of
  agent requests that failed closed reported (target 0: ``maxUnavailable: 0``, readiness, the preStop
  sleep and the shutdown delay exist for this; the PDB guards voluntary evictions).
- Installed as shipped: restricted pod security, probes, the fixed ClusterIP, the PDB; a drain's
  second eviction is refused while the first replica is being replaced.
- The guard scaled to 0 by the admin: every agent request fails closed, reads included (the
  authorizer is unreachable too, ``failurePolicy: Deny``); the admin's and the controllers' work goes
  on (a Deployment still gets Running Pods).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest

from tests.e2e import incluster, kube, stack
from tests.e2e.conftest import SceneFactory
from tests.e2e.controlplane import node
from tests.e2e.node import load
from tests.e2e.node.conftest import pause_deployment, running, wait_running
from webhook import manifests

pytestmark = pytest.mark.e2e


def assert_no_harm(tally: load.Tally) -> None:
    assert tally.seconds >= load.MINIMUM_SECONDS and tally.rate() >= 20, tally.summary()
    assert tally.counts["admin"]["served"] == sum(tally.counts["admin"].values()), (
        tally.summary(),
        tally.samples,
    )
    assert tally.counts["attack"]["admitted"] == 0, (tally.summary(), tally.samples)
    assert tally.counts["agent"]["other"] == 0 and tally.counts["attack"]["other"] == 0, tally.samples


def test_rollout_restart_under_load(
    cluster: incluster.InClusterStack, new_scene: SceneFactory, report: Callable[[str], None]
) -> None:
    namespace = new_scene("load-restart").namespace
    before = {p["metadata"]["name"] for p in cluster.pods()}
    now = datetime.datetime.now(datetime.UTC).isoformat()
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}
    with load.steady(cluster, namespace) as tally:
        cluster.admin.ok(
            kube.Request(
                "PATCH", cluster.deployment_path, patch, content_type="application/strategic-merge-patch+json"
            )
        )
        cluster.wait_for_rollout(2)
    after = {p["metadata"]["name"] for p in cluster.pods()}
    report(f"rollout restart: {tally.summary()}")
    assert not before & after, f"the restart kept pods {before & after}"
    assert_no_harm(tally)


def test_guard_pod_deleted_under_load(
    cluster: incluster.InClusterStack, new_scene: SceneFactory, report: Callable[[str], None]
) -> None:
    namespace = new_scene("load-delete").namespace
    victim = cluster.pods()[0]["metadata"]["name"]
    with load.steady(cluster, namespace) as tally:
        cluster.admin.ok(
            kube.Request("DELETE", f"/api/v1/namespaces/{cluster.policy.guard_namespace}/pods/{victim}")
        )
        cluster.wait_for_rollout(2)
    report(f"guard pod deleted: {tally.summary()}")
    assert victim not in {p["metadata"]["name"] for p in cluster.pods()}
    assert_no_harm(tally)


def test_guard_scaled_to_zero_agents_fail_closed_humans_fine(
    cluster: incluster.InClusterStack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("scaled-zero").namespace
    with cluster.scaled_down():
        assert cluster.pods() == []
        read = cluster.agent.request(kube.Request("GET", f"/api/v1/namespaces/{namespace}/configmaps"))
        assert load.classify_agent(read) == "failed-closed" or read.status == 500, read
        write = cluster.agent.request(
            kube.Request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", pause_deployment("a"))
        )
        assert write.status == 500, write
        attack = cluster.agent.request(kube.Request("DELETE", f"/api/v1/namespaces/{namespace}"))
        assert load.classify_attack(attack) == "failed-closed", attack

        admin = cluster.admin.request(
            kube.Request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", pause_deployment("web"))
        )
        assert admin.status == 201, admin
        wait_running(cluster.admin, namespace, "app=web", 2)  # the controllers were not judged either
        configmaps = cluster.admin.ok(kube.Request("GET", f"/api/v1/namespaces/{namespace}/configmaps"))
        assert [c["metadata"]["name"] for c in configmaps.body["items"]] == ["kube-root-ca.crt"]
    still = cluster.admin.request(kube.Request("GET", f"/api/v1/namespaces/{namespace}"))
    assert still.status == 200 and "deletionTimestamp" not in still.body["metadata"], still


def test_installed_as_shipped(cluster: incluster.InClusterStack) -> None:
    """What the overlay promises holds in the running cluster: restricted pod security enforced on the
    guard's namespace (its pods were admitted under it), ready replicas behind the fixed ClusterIP,
    the PodDisruptionBudget tracking both, the webhook trusting the Secret's CA."""
    namespace = cluster.policy.guard_namespace
    labels = cluster.admin.ok(kube.Request("GET", f"/api/v1/namespaces/{namespace}")).body["metadata"][
        "labels"
    ]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    pods = cluster.pods()
    assert len(pods) == 2 and all(running(p) for p in pods), pods
    for pod in pods:
        [container] = pod["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = cluster.admin.ok(
        kube.Request("GET", f"/api/v1/namespaces/{namespace}/services/agent-guard")
    ).body
    assert service["spec"]["clusterIP"] == node.GUARD_CLUSTER_IP
    budget = cluster.admin.ok(
        kube.Request("GET", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/agent-guard")
    ).body["status"]
    assert budget["currentHealthy"] == 2 and budget["disruptionsAllowed"] == 1, budget
    secret = cluster.admin.ok(
        kube.Request("GET", f"/api/v1/namespaces/{namespace}/secrets/agent-guard-tls")
    ).body
    webhook = cluster.admin.ok(
        kube.Request("GET", f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}")
    ).body
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert webhook["webhooks"][0]["clientConfig"]["service"]["name"] == "agent-guard"
    # --rbac-source=in-cluster: each replica listed the RBAC kinds through the kubernetes Service.
    for pod in pods:
        name = pod["metadata"]["name"]
        log = cluster.admin.request(
            kube.Request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log", accept="*/*")
        )
        assert "RBAC view synced from in-cluster" in log.text, (name, log.text[-2000:])


def evict(cluster: incluster.InClusterStack, pod: str) -> kube.Reply:
    namespace = cluster.policy.guard_namespace
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    return cluster.admin.request(
        kube.Request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", eviction)
    )


def test_disruption_budget_evicts_one_replica_at_a_time(cluster: incluster.InClusterStack) -> None:
    """A drain (the Eviction API, as kubectl drain uses it) takes one replica; the second eviction
    is refused (HTTP 429) until the replacement is ready."""
    first, second = (p["metadata"]["name"] for p in cluster.pods())
    assert evict(cluster, first).status == 201
    refused = evict(cluster, second)
    assert refused.status == 429, refused
    cluster.wait_for_rollout(2)
    assert first not in {p["metadata"]["name"] for p in cluster.pods()}
