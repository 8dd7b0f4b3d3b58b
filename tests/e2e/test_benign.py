"""Scenario 3 (and 4 for benign work): ordinary agent work goes through the guard untouched.

This is the agent as an MCP server drives it: the typed ``kubernetes`` client with its own token.
"""

from __future__ import annotations

import pytest

from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory

pytestmark = pytest.mark.e2e


def test_agent_creates_deployment_service_and_configmap(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("benign").namespace
    agent = enforcing.agent
    created = agent.apps.create_namespaced_deployment(namespace, attacks.deployment("web"))
    assert created.metadata.name == "web"
    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    assert agent.core.create_namespaced_service(namespace, service).spec.cluster_ip
    agent.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "web"}, "data": {"mode": "blue"}}
    )
    patched = agent.core.patch_namespaced_config_map("web", namespace, {"data": {"mode": "green"}})
    assert patched.data == {"mode": "green"}


def test_agent_scales_through_the_scale_subresource(enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    namespace = new_scene("scale").namespace
    agent = enforcing.agent
    agent.apps.create_namespaced_deployment(namespace, attacks.deployment("web"))
    scale = agent.apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert enforcing.admin.apps.read_namespaced_deployment("web", namespace).spec.replicas == 3


def test_agent_deletes_a_pod(enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    scene = new_scene("delete-pod")
    enforcing.admin.core.create_namespaced_pod(scene.namespace, attacks.pod("stuck"))
    enforcing.agent.core.delete_namespaced_pod("stuck", scene.namespace)
    gone = enforcing.admin.request(kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/pods/stuck"))
    if enforcing.target.guard_in_cluster and gone.status == 200:  # kind: a kubelet stops it gracefully
        assert gone.body["metadata"].get("deletionTimestamp"), gone.body["metadata"]
        return
    assert gone.status == 404, gone  # unscheduled pods are deleted at once (no kubelet to wait for)


def test_agent_creates_and_labels_a_namespace(enforcing: stack.Stack) -> None:
    name = "e2e-agent-made"
    agent = enforcing.agent
    reply = agent.request(kube.Request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}))
    assert reply.status in (201, 409), reply
    patch = {"metadata": {"labels": {"team": "payments"}}}
    labelled = agent.request(
        kube.Request(
            "PATCH", f"/api/v1/namespaces/{name}", patch, content_type="application/merge-patch+json"
        )
    )
    assert labelled.status == 200 and labelled.body["metadata"]["labels"]["team"] == "payments", labelled


def test_agent_benign_server_side_dry_run_is_admitted(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("benign-dry").namespace
    request = kube.Request(
        "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", attacks.deployment("web")
    )
    reply = enforcing.agent.request(request.dry_run())
    assert reply.status == 201 and not reply.warnings, reply
    absent = enforcing.admin.request(
        kube.Request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    )
    assert absent.status == 404, absent
