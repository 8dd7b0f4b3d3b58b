"""The guard disturbed while agents and admins keep working (``load.steady``: 24 requests/s, >= 30 s).

- ``kubectl rollout restart`` (the same patch kubectl sends: a ``restartedAt`` template annotation)
  and the deletion of one guard Pod: 0 failed admin requests, no attack admitted, and the number of
  agent requests that failed closed reported (target 0: ``maxUnavailable: 0``, readiness, the preStop
  sleep and the shutdown delay exist for this; the PDB guards voluntary evictions).
- The guard scaled to 0 by the admin: every agent request fails closed, reads included (the
  authorizer is unreachable too, ``failurePolicy: Deny``); the admin's and the controllers' work goes
  on (a Deployment still gets Running Pods).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest

from tests.e2e import incluster, kube
from tests.e2e.conftest import SceneFactory
from tests.e2e.node import load
from tests.e2e.node.conftest import pause_deployment, wait_running

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
