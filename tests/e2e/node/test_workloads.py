"""Real controllers and a real kubelet behind the guard: what agents and admins get on a working node.

- The agent's benign Deployment becomes Running Pods through the real ReplicaSet controller (whose
  own writes are never sent to the guard: it is not an agent).
- The agent's privileged Deployment is denied at the agent's write; the admin's runs.
- With a kubelet behind the apiserver, the agent's exec, attach and port-forward are denied by the
  guard, the admin's exec really runs a command in the container, and the agent reads logs of its
  own workloads (the policy says nothing against logs) but not of the guard's pods (guard-tamper).
- The admin's namespace deletion completes (the namespace controller empties it, the kubelet stops
  its pods); the agent's is denied and changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.stream import stream

from tests.e2e import attacks, incluster, kube
from tests.e2e.conftest import SceneFactory
from tests.e2e.node.conftest import pause_deployment, running, wait_running
from webhook import manifests

pytestmark = pytest.mark.e2e

DENIED_BY_US = f'admission webhook "{manifests.WEBHOOK_NAME}" denied the request'
NAMESPACE_GONE_TIMEOUT_SECONDS = 120.0


def assert_denied_by_guard(reply: kube.Reply, guard: str) -> None:
    """403 carrying ``[guard]``: from the guard's authorizer or its admission webhook."""
    assert reply.status == 403, reply
    assert f"[{guard}]" in reply.message, reply.message


def deployments(namespace: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments"


def test_agent_deployment_runs_through_the_replicaset_controller(
    cluster: incluster.InClusterStack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("agent-web").namespace
    reply = cluster.agent.request(kube.Request("POST", deployments(namespace), pause_deployment("web")))
    assert reply.status == 201, reply
    pods = wait_running(cluster.admin, namespace, "app=web", 2)
    owners = {ref["kind"] for pod in pods for ref in pod["metadata"].get("ownerReferences", [])}
    assert owners == {"ReplicaSet"}, owners
    assert all(pod["spec"].get("nodeName") == "kag-node" for pod in pods), pods


def test_agent_privileged_deployment_is_denied_admin_privileged_deployment_runs(
    cluster: incluster.InClusterStack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("privileged").namespace
    privileged = {"privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False}
    body = pause_deployment("root", replicas=1)
    body["spec"]["template"]["spec"]["containers"][0]["securityContext"] = privileged
    agent = cluster.agent.request(kube.Request("POST", deployments(namespace), body))
    assert_denied_by_guard(agent, "privileged-workload")
    assert DENIED_BY_US in agent.message, agent.message
    gone = cluster.admin.request(kube.Request("GET", f"{deployments(namespace)}/root"))
    assert gone.status == 404, gone

    admin = cluster.admin.request(kube.Request("POST", deployments(namespace), body))
    assert admin.status == 201, admin
    [pod] = wait_running(cluster.admin, namespace, "app=root", 1)
    assert pod["spec"]["containers"][0]["securityContext"]["privileged"] is True


def connect(pod_path: str, subresource: str) -> kube.Request:
    query = {
        "exec": (("command", "env"), ("stdout", "true")),
        "attach": (("stdout", "true"),),
        "portforward": (("ports", "8080"),),
    }[subresource]
    return kube.Request("POST", f"{pod_path}/{subresource}", query=query)


@pytest.mark.parametrize("subresource", ["exec", "attach", "portforward"])
def test_agent_cannot_reach_the_kubelet(
    subresource: str, cluster: incluster.InClusterStack, app: tuple[attacks.Scene, str]
) -> None:
    scene, name = app
    reply = cluster.agent.request(connect(f"/api/v1/namespaces/{scene.namespace}/pods/{name}", subresource))
    assert_denied_by_guard(reply, "secret-access")


def test_admin_exec_runs_in_the_container(
    cluster: incluster.InClusterStack, app: tuple[attacks.Scene, str]
) -> None:
    scene, name = app
    output = stream(
        cluster.admin.core.connect_get_namespaced_pod_exec,
        name,
        scene.namespace,
        command=["python3", "-c", "import os; print('uid', os.getuid())"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert output.strip() == "uid 65532", output  # the image's non-root user, inside the container


def logs(client: kube.Client, namespace: str, pod: str) -> kube.Reply:
    return client.request(kube.Request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", accept="*/*"))


def test_logs_follow_the_policy(cluster: incluster.InClusterStack, app: tuple[attacks.Scene, str]) -> None:
    """``pods/log`` is the read-only tool secret-access points agents to instead of exec: the kubelet
    serves it to the agent, for its workloads and for the guard's pods alike (guard-tamper judges
    writes in the guard's namespace, not reads; the decision log never carries Secret data)."""
    scene, name = app
    own = logs(cluster.agent, scene.namespace, name)
    assert own.status == 200 and "hello from the e2e app" in own.text, own
    guard_pod = cluster.pods()[0]["metadata"]["name"]
    guard = logs(cluster.agent, cluster.policy.guard_namespace, guard_pod)
    assert guard.status == 200 and "agent-guard.server" in guard.text, guard  # the guard's start-up line
    assert "[secret-access]" in connect_advice(cluster, scene, name) and "pods/log" in connect_advice(
        cluster, scene, name
    )


def connect_advice(cluster: incluster.InClusterStack, scene: attacks.Scene, name: str) -> str:
    """What the guard tells an agent whose exec it denies."""
    reply = cluster.agent.request(connect(f"/api/v1/namespaces/{scene.namespace}/pods/{name}", "exec"))
    return reply.message


def namespace_state(cluster: incluster.InClusterStack, name: str) -> dict[str, Any] | None:
    reply = cluster.admin.request(kube.Request("GET", f"/api/v1/namespaces/{name}"))
    return None if reply.status == 404 else reply.body


def test_admin_namespace_deletion_completes_agent_deletion_is_denied(
    cluster: incluster.InClusterStack, new_scene: SceneFactory
) -> None:
    kept, doomed = new_scene("ns-kept").namespace, new_scene("ns-doomed").namespace
    for namespace in (kept, doomed):
        cluster.admin.ok(kube.Request("POST", deployments(namespace), pause_deployment("web", replicas=1)))
    for namespace in (kept, doomed):
        wait_running(cluster.admin, namespace, "app=web", 1)

    agent = cluster.agent.request(kube.Request("DELETE", f"/api/v1/namespaces/{kept}"))
    assert_denied_by_guard(agent, "namespace-delete")
    state = namespace_state(cluster, kept)
    assert state is not None and "deletionTimestamp" not in state["metadata"], state

    cluster.admin.ok(kube.Request("DELETE", f"/api/v1/namespaces/{doomed}"))
    deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT_SECONDS
    while (state := namespace_state(cluster, doomed)) is not None and time.monotonic() < deadline:
        time.sleep(1.0)
    assert state is None, f"namespace {doomed} still there: {state.get('status') if state else None}"
    [pod] = [p for p in _pods(cluster, kept) if running(p)]
    assert pod["metadata"]["namespace"] == kept


def _pods(cluster: incluster.InClusterStack, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.admin.ok(
        kube.Request("GET", f"/api/v1/namespaces/{namespace}/pods")
    ).body["items"]
    return items
