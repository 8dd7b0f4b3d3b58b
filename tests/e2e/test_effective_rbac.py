"""Issue 17, part 0: the guard judges bindings and workloads by effective permissions, on a real apiserver.

An independent suite walked around the name-based checks with three chains; each is replayed here
against the guard as shipped (``--rbac-source``: it watches Roles, ClusterRoles and bindings with its
own read-only ServiceAccount, see ``stack.rbac_source``):

1. a ClusterRole granting only ``create pods`` (nothing the name-based checks flag), bound to a
   namespace's ``default`` ServiceAccount, plus a workload running as it;
2. an existing custom Secret-reading ClusterRole bound to ``default``, and a Pod running as it;
3. a Pod running as a ``default`` bound to ``cluster-admin``, or to ``edit`` through a group.

The guard learns of an RBAC change through its watch, a moment after the apiserver stored it: a
scenario that arms an account (as the admin) first waits, with the agent's server-side dry-run, until
the guard refuses it, then sends the real request. The time that took is the guard's view lag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard

pytestmark = pytest.mark.e2e

RBAC = "/apis/rbac.authorization.k8s.io/v1"
DENIED_BY_US = 'admission webhook "validate.agent-guard.io" denied the request'
VIEW_TIMEOUT_SECONDS = 15.0
NOT_IN_VIEW = "not in the guard's RBAC view yet"


def role_ref(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "rules": list(rules)}


def role_binding(name: str, kind: str, role: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "roleRef": role_ref(kind, role), "subjects": list(subjects)}


DEFAULT_ACCOUNT = {"kind": "ServiceAccount", "name": "default"}
CREATE_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}
READ_SECRETS = {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"]}


def running_as_default(name: str) -> dict[str, Any]:
    """An ordinary restricted Pod that runs as ``default`` with its token (the ServiceAccount admission
    plugin mounts it): nothing but the account it runs as is at stake."""
    body = attacks.pod(name)
    del body["spec"]["automountServiceAccountToken"]
    return body


def deployment_as_default(name: str) -> dict[str, Any]:
    body = attacks.deployment(name)
    del body["spec"]["template"]["spec"]["automountServiceAccountToken"]
    return body


def denied(reply: kube.Reply, guard: str) -> bool:
    return reply.status == 403 and DENIED_BY_US in reply.message and f"[{guard}]" in reply.message


def until(send: Callable[[], kube.Reply], done: Callable[[kube.Reply], bool]) -> tuple[kube.Reply, float]:
    """Send until ``done`` holds (the guard's watch has caught up); the last reply and how long it took."""
    started = time.monotonic()
    reply = send()
    while not done(reply) and time.monotonic() - started < VIEW_TIMEOUT_SECONDS:
        time.sleep(0.1)
        reply = send()
    return reply, time.monotonic() - started


def wait_until_refused(agent: kube.Client, request: kube.Request, guard: str) -> float:
    """Dry-run ``request`` as the agent until the guard refuses it (its view has the arming binding)."""
    reply, waited = until(lambda: agent.request(request.dry_run()), lambda r: denied(r, guard))
    assert denied(reply, guard), f"the guard did not refuse within {VIEW_TIMEOUT_SECONDS}s: {reply}"
    return waited


def absent(admin: kube.Client, path: str) -> None:
    reply = admin.request(kube.Request("GET", path))
    assert reply.status == 404, f"{path} exists after a refusal: {reply}"


# --- chain 1: a ClusterRole granting only "create pods", bound to default -----------------------


def test_binding_a_create_pods_role_to_default_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("rbac-escalation", enforcing)
    scene = new_scene("chain1-bind")
    role = f"e2e-pod-starter-{scene.suffix}"
    made = enforcing.agent.request(
        kube.Request("POST", f"{RBAC}/clusterroles", cluster_role(role, CREATE_PODS))
    )
    assert made.status == 201, f"nothing in the role itself is refused: {made}"

    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("starter", "ClusterRole", role, DEFAULT_ACCOUNT))
    replies: list[kube.Reply] = []

    def send() -> kube.Reply:
        replies.append(enforcing.agent.request(request))
        return replies[-1]

    reply, _ = until(send, lambda r: NOT_IN_VIEW not in r.message)
    # Every attempt was refused: first (maybe) because the guard had not seen the new role yet, then
    # because of what it grants.
    for each in replies:
        assert denied(each, "rbac-escalation"), each
    assert f'roleRef ClusterRole "{role}" grants powers the guard denies to agents' in reply.message, reply
    assert "create pods or workloads" in reply.message, reply
    assert f"ServiceAccount {scene.namespace}/default" in reply.message, reply
    absent(enforcing.admin, f"{bindings}/starter")
    admin = enforcing.admin.request(request)
    assert admin.status == 201, f"the same binding is a valid request (the admin may make it): {admin}"


def test_workload_running_as_a_default_armed_with_create_pods_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("workload-identity", enforcing)
    scene = new_scene("chain1-run")
    role = f"e2e-pod-starter-{scene.suffix}"
    enforcing.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", cluster_role(role, CREATE_PODS)))
    enforcing.admin.ok(
        kube.Request(
            "POST",
            f"{RBAC}/namespaces/{scene.namespace}/rolebindings",
            role_binding("starter", "ClusterRole", role, DEFAULT_ACCOUNT),
        )
    )
    path = f"/apis/apps/v1/namespaces/{scene.namespace}/deployments"
    request = kube.Request("POST", path, deployment_as_default("web"))
    wait_until_refused(enforcing.agent, request, "workload-identity")
    reply = enforcing.agent.request(request)
    assert denied(reply, "workload-identity"), reply
    assert f'ServiceAccount "{scene.namespace}/default"' in reply.message, reply
    assert "create pods or workloads" in reply.message, reply
    assert f"RoleBinding {scene.namespace}/starter -> ClusterRole {role}" in reply.message, reply
    absent(enforcing.admin, f"{path}/web")


# --- chain 2: an existing custom Secret-reading ClusterRole -----------------------------------------


def test_binding_a_custom_secret_reader_to_default_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("rbac-escalation", enforcing)
    scene = new_scene("chain2-bind")
    role = f"e2e-config-reader-{scene.suffix}"
    enforcing.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", cluster_role(role, READ_SECRETS)))
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("reads", "ClusterRole", role, DEFAULT_ACCOUNT))
    reply, _ = until(lambda: enforcing.agent.request(request), lambda r: NOT_IN_VIEW not in r.message)
    assert denied(reply, "rbac-escalation"), reply
    assert "read Secrets (rule: get,list on configmaps,secrets" in reply.message, reply
    absent(enforcing.admin, f"{bindings}/reads")
    # The same binding to the built-in powerful role was refused before effective permissions too.
    builtin = kube.Request("POST", bindings, role_binding("edits", "ClusterRole", "edit", DEFAULT_ACCOUNT))
    assert denied(enforcing.agent.request(builtin), "rbac-escalation")


def test_pod_running_as_a_default_armed_with_a_secret_reader_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("workload-identity", enforcing)
    scene = new_scene("chain2-run")
    role = f"e2e-config-reader-{scene.suffix}"
    enforcing.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", cluster_role(role, READ_SECRETS)))
    enforcing.admin.ok(
        kube.Request(
            "POST",
            f"{RBAC}/namespaces/{scene.namespace}/rolebindings",
            role_binding("reads", "ClusterRole", role, DEFAULT_ACCOUNT),
        )
    )
    pods = f"/api/v1/namespaces/{scene.namespace}/pods"
    request = kube.Request("POST", pods, running_as_default("reader"))
    wait_until_refused(enforcing.agent, request, "workload-identity")
    reply = enforcing.agent.request(request)
    assert denied(reply, "workload-identity"), reply
    assert f"read Secrets (via RoleBinding {scene.namespace}/reads -> ClusterRole {role}" in reply.message
    absent(enforcing.admin, f"{pods}/reader")


# --- chain 3: default bound to cluster-admin, or to edit through a group ---------------------------


def test_pod_running_as_a_default_bound_to_cluster_admin_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("workload-identity", enforcing)
    scene = new_scene("chain3-admin")
    kube.bind_cluster_role(enforcing.admin, scene.namespace, "default", "cluster-admin")
    pods = f"/api/v1/namespaces/{scene.namespace}/pods"
    request = kube.Request("POST", pods, running_as_default("admin"))
    wait_until_refused(enforcing.agent, request, "workload-identity")
    reply = enforcing.agent.request(request)
    assert denied(reply, "workload-identity"), reply
    binding = f"e2e:{scene.namespace}:default:cluster-admin"
    assert f"read Secrets (via ClusterRoleBinding {binding} -> ClusterRole cluster-admin" in reply.message
    assert "escalate, bind or impersonate" in reply.message, reply
    absent(enforcing.admin, f"{pods}/admin")


def test_pod_running_as_a_default_given_edit_through_its_group_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    """``edit`` is an aggregated ClusterRole: the guard resolves the aggregation itself (this control
    plane has no controller-manager to fill it in), and the grant comes through the namespace's
    ServiceAccount group, not the account's name."""
    require_guard("workload-identity", enforcing)
    scene = new_scene("chain3-edit")
    group = {
        "kind": "Group",
        "name": f"system:serviceaccounts:{scene.namespace}",
        "apiGroup": "rbac.authorization.k8s.io",
    }
    enforcing.admin.ok(
        kube.Request(
            "POST",
            f"{RBAC}/namespaces/{scene.namespace}/rolebindings",
            role_binding("everyone-edits", "ClusterRole", "edit", group),
        )
    )
    path = f"/apis/apps/v1/namespaces/{scene.namespace}/deployments"
    request = kube.Request("POST", path, deployment_as_default("web"))
    wait_until_refused(enforcing.agent, request, "workload-identity")
    reply = enforcing.agent.request(request)
    assert denied(reply, "workload-identity"), reply
    assert (
        f"read Secrets (via RoleBinding {scene.namespace}/everyone-edits -> ClusterRole edit "
        f'(in namespace "{scene.namespace}", via Group system:serviceaccounts:{scene.namespace}))'
    ) in reply.message, reply
    absent(enforcing.admin, f"{path}/web")


# --- bind first, fill the role later ---------------------------------------------------------------


def test_filling_a_role_already_bound_to_default_is_refused(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard("rbac-escalation", enforcing)
    scene = new_scene("fill-later")
    roles = f"{RBAC}/namespaces/{scene.namespace}/roles"
    harmless = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    enforcing.agent.ok(kube.Request("POST", roles, {"metadata": {"name": "helper"}, "rules": [harmless]}))
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    bind = kube.Request("POST", bindings, role_binding("helper", "Role", "helper", DEFAULT_ACCOUNT))
    made, _ = until(lambda: enforcing.agent.request(bind), lambda r: r.status == 201)
    assert made.status == 201, f"binding a harmless role is allowed once the guard has seen it: {made}"
    fill = kube.Request(
        "PUT",
        f"{roles}/helper",
        {
            "metadata": {"name": "helper"},
            "rules": [harmless, {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}],
        },
    )
    wait_until_refused(enforcing.agent, fill, "rbac-escalation")
    reply = enforcing.agent.request(fill)
    assert denied(reply, "rbac-escalation"), reply
    target = f'Role "{scene.namespace}/helper"'
    assert f"would give powers the guard denies to agents to those already bound to {target}" in reply.message
    holder = f"ServiceAccount {scene.namespace}/default through RoleBinding {scene.namespace}/helper"
    assert holder in reply.message, reply
    current = enforcing.admin.ok(kube.Request("GET", f"{roles}/helper")).body
    assert current["rules"] == [harmless], "the refused write changed nothing"


# --- benign: default holds nothing, so ordinary work passes ----------------------------------------


def test_agent_runs_an_ordinary_deployment_as_a_default_that_holds_nothing(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    namespace = new_scene("benign-default").namespace
    created = enforcing.agent.apps.create_namespaced_deployment(namespace, deployment_as_default("web"))
    assert created.spec.template.spec.service_account_name in (None, "default")
    pod = enforcing.agent.core.create_namespaced_pod(namespace, running_as_default("one-off"))
    assert pod.metadata.name == "one-off"


def test_agent_binds_a_harmless_custom_role_to_default(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    scene = new_scene("benign-bind")
    role = f"e2e-pod-log-reader-{scene.suffix}"
    rule = {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}
    enforcing.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", cluster_role(role, rule)))
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("logs", "ClusterRole", role, DEFAULT_ACCOUNT))
    reply, _ = until(lambda: enforcing.agent.request(request), lambda r: r.status == 201)
    assert reply.status == 201 and not reply.warnings, reply
