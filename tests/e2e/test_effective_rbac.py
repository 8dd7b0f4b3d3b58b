"""Issue 17, part 0: the guard judges bindings and workloads by effective permissions, on a real apiserver.

An independent suite walked around the name-based checks with three chains; each is replayed here
against the guard as shipped (``--rbac-source``: it watches Roles, ClusterRoles and bindings with its
own read-only ServiceAccount, see ``stack.rbac_source``):

1. a ClusterRole granting only ``create pods`` (nothing the name-based checks flag), bound to a
   namespace's ``default`` ServiceAccount, plus a workload running as it;
2. an existing custom Secret-reading ClusterRole bound to ``default``, and a Pod running as it;
3. a Pod running as a ``default`` bound to ``cluster-admin``, or to ``edit`` through a group.

The guard learns of an RBAC change through its watch, a moment after the apiserver stored it: a
scenario that writes RBAC objects first waits until every guard's view has that write
(``Stack.wait_for_rbac_view``: the resourceVersion its ``/readyz`` reports), then the agent acts once
and must be refused at the first attempt.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard

pytestmark = pytest.mark.e2e

RBAC = "/apis/rbac.authorization.k8s.io/v1"
DENIED_BY_US = 'admission webhook "validate.agent-guard.io" denied the request'


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


def write(e2e: stack.Stack, client: kube.Client, path: str, body: dict[str, Any], kind: str) -> None:
    """Create an RBAC object and wait until the guard's view has it."""
    made = client.ok(kube.Request("POST", path, body))
    e2e.wait_for_rbac_view(kind, made.body["metadata"]["resourceVersion"])


def arm_default(e2e: stack.Stack, namespace: str, binding: str, role: dict[str, Any]) -> None:
    """As the admin: a custom ClusterRole, bound to ``namespace``'s ``default`` by a RoleBinding."""
    e2e.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", role))
    body = role_binding(binding, "ClusterRole", role["metadata"]["name"], DEFAULT_ACCOUNT)
    write(e2e, e2e.admin, f"{RBAC}/namespaces/{namespace}/rolebindings", body, "RoleBinding")


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
    # Nothing in the role itself is refused: the agent may write it.
    write(enforcing, enforcing.agent, f"{RBAC}/clusterroles", cluster_role(role, CREATE_PODS), "ClusterRole")
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("starter", "ClusterRole", role, DEFAULT_ACCOUNT))
    reply = enforcing.agent.request(request)
    assert denied(reply, "rbac-escalation"), reply
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
    arm_default(enforcing, scene.namespace, "starter", cluster_role(role, CREATE_PODS))
    path = f"/apis/apps/v1/namespaces/{scene.namespace}/deployments"
    request = kube.Request("POST", path, deployment_as_default("web"))
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
    write(enforcing, enforcing.admin, f"{RBAC}/clusterroles", cluster_role(role, READ_SECRETS), "ClusterRole")
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("reads", "ClusterRole", role, DEFAULT_ACCOUNT))
    reply = enforcing.agent.request(request)
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
    arm_default(enforcing, scene.namespace, "reads", cluster_role(role, READ_SECRETS))
    pods = f"/api/v1/namespaces/{scene.namespace}/pods"
    request = kube.Request("POST", pods, running_as_default("reader"))
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
    bound = kube.bind_cluster_role(enforcing.admin, scene.namespace, "default", "cluster-admin")
    enforcing.wait_for_rbac_view("ClusterRoleBinding", bound.body["metadata"]["resourceVersion"])
    pods = f"/api/v1/namespaces/{scene.namespace}/pods"
    request = kube.Request("POST", pods, running_as_default("admin"))
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
    binding = role_binding("everyone-edits", "ClusterRole", "edit", group)
    write(
        enforcing,
        enforcing.admin,
        f"{RBAC}/namespaces/{scene.namespace}/rolebindings",
        binding,
        "RoleBinding",
    )
    path = f"/apis/apps/v1/namespaces/{scene.namespace}/deployments"
    request = kube.Request("POST", path, deployment_as_default("web"))
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
    write(enforcing, enforcing.agent, roles, {"metadata": {"name": "helper"}, "rules": [harmless]}, "Role")
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    # Binding the harmless role is allowed (the agent's own write: the guard must see it before the fill).
    write(
        enforcing,
        enforcing.agent,
        bindings,
        role_binding("helper", "Role", "helper", DEFAULT_ACCOUNT),
        "RoleBinding",
    )
    fill = kube.Request(
        "PUT",
        f"{roles}/helper",
        {
            "metadata": {"name": "helper"},
            "rules": [harmless, {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}],
        },
    )
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
    write(enforcing, enforcing.admin, f"{RBAC}/clusterroles", cluster_role(role, rule), "ClusterRole")
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    request = kube.Request("POST", bindings, role_binding("logs", "ClusterRole", role, DEFAULT_ACCOUNT))
    reply = enforcing.agent.request(request)
    assert reply.status == 201 and not reply.warnings, reply


# --- the view follows removals; fail closed until the first read ---------------------------------


def test_the_view_follows_a_removed_binding(enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    """Once the admin removes the binding that armed ``default``, the agent may run as it again."""
    require_guard("workload-identity", enforcing)
    scene = new_scene("disarmed")
    role = f"e2e-pod-starter-{scene.suffix}"
    arm_default(enforcing, scene.namespace, "starter", cluster_role(role, CREATE_PODS))
    pods = f"/api/v1/namespaces/{scene.namespace}/pods"
    request = kube.Request("POST", pods, running_as_default("web"))
    assert denied(enforcing.agent.request(request.dry_run()), "workload-identity")
    bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
    enforcing.admin.ok(kube.Request("DELETE", f"{bindings}/starter"))
    # A delete answers without the resourceVersion of its event: a later write of the same kind is
    # delivered after it on the guard's watch, so once the view has that, it has the delete too.
    harmless = cluster_role(
        f"e2e-nothing-{scene.suffix}", {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    )
    enforcing.admin.ok(kube.Request("POST", f"{RBAC}/clusterroles", harmless))
    marker = role_binding(
        "marker", "ClusterRole", harmless["metadata"]["name"], {"kind": "User", "name": "nobody"}
    )
    write(enforcing, enforcing.admin, bindings, marker, "RoleBinding")
    reply = enforcing.agent.request(request)
    assert reply.status == 201, f"default holds nothing any more: {reply}"


@pytest.mark.local_only(
    reason="a second guard process whose account may not read RBAC, registered instead of the "
    "deployed one: no replica of a Deployment can be made blind while the others serve"
)
def test_until_its_first_read_the_guard_refuses_what_needs_it(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    """A guard whose account may not read RBAC never syncs: ``/readyz`` stays red, agents' pod specs
    and bindings are refused with a reason to retry, the rest of their work and everyone else's passes."""
    require_guard("workload-identity", enforcing)
    if not enforcing.port:
        pytest.skip("existing-cluster mode: no local guard process can be started next to the deployed one")
    scene = new_scene("unsynced")
    blind = kube.service_account(enforcing.admin, scene.namespace, "cannot-read-rbac", None)
    config = kube.kubeconfig(
        enforcing.target, blind.name, blind.token, enforcing.workdir / f"blind-{scene.suffix}"
    )
    with enforcing.extra_guard("--rbac-source", f"kubeconfig:{config}", ready=False) as guard:
        answer = stack.readyz(guard)
        deadline = time.monotonic() + 10
        while "error" not in answer["rbac"] and time.monotonic() < deadline:
            time.sleep(0.1)
            answer = stack.readyz(guard)
        assert answer["rbac"]["synced"] is False, answer
        assert "HTTP 403" in answer["rbac"]["error"], f"/readyz says why it cannot read RBAC: {answer}"
        enforcing.webhook.point_at(guard)
        pods = f"/api/v1/namespaces/{scene.namespace}/pods"
        reply = enforcing.agent.request(kube.Request("POST", pods, running_as_default("web")))
        assert denied(reply, "workload-identity"), reply
        assert "has not finished reading the cluster's Roles, ClusterRoles and bindings" in reply.message
        assert "retry in a few seconds" in reply.message, reply
        bindings = f"{RBAC}/namespaces/{scene.namespace}/rolebindings"
        bind = role_binding("logs", "ClusterRole", "view", DEFAULT_ACCOUNT)
        refused = enforcing.agent.request(kube.Request("POST", bindings, bind))
        assert denied(refused, "rbac-escalation") and "retry in a few seconds" in refused.message, refused
        tokenless = enforcing.agent.request(kube.Request("POST", pods, attacks.pod("tokenless")))
        assert tokenless.status == 201, f"a pod without a token needs no RBAC view: {tokenless}"
        configmap = {"metadata": {"name": "settings"}, "data": {"a": "b"}}
        made = enforcing.agent.request(
            kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/configmaps", configmap)
        )
        assert made.status == 201, made
        admin = enforcing.admin.request(kube.Request("POST", pods, running_as_default("admins")))
        assert admin.status == 201, f"nobody but agents is affected: {admin}"


@pytest.mark.local_only(
    reason="a guard process of its own with --workers 2, whose log and /readyz are read per worker"
)
def test_every_worker_keeps_its_own_view(enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    """``--workers 2``: the watch threads start in each forked worker (threads do not survive a fork),
    so whichever worker answers, an armed ``default`` is refused and a harmless one allowed."""
    require_guard("workload-identity", enforcing)
    if not enforcing.port:
        pytest.skip("existing-cluster mode: no local guard process can be started next to the deployed one")
    armed, harmless = new_scene("workers-armed"), new_scene("workers-harmless")
    with enforcing.extra_guard("--workers", "2") as guard:
        role = f"e2e-pod-starter-{armed.suffix}"
        arm_default(enforcing, armed.namespace, "starter", cluster_role(role, CREATE_PODS))
        path = f"{RBAC}/namespaces/{armed.namespace}/rolebindings/starter"
        version = enforcing.admin.ok(kube.Request("GET", path)).body["metadata"]["resourceVersion"]
        in_a_row, deadline, answer = 0, time.monotonic() + 60, {}
        while in_a_row < 12 and time.monotonic() < deadline:  # new connections: both workers answer
            answer = stack.readyz(guard)
            in_a_row = in_a_row + 1 if stack.view_has(answer, "RoleBinding", version) else 0
        assert in_a_row >= 12, f"the workers' views did not catch up: {answer}"
        while guard.output().count("RBAC view synced") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # a worker's log line may trail its answers
        assert guard.output().count("RBAC view synced") == 2, "each worker reads RBAC itself"
        enforcing.webhook.point_at(guard)
        for attempt in range(6):
            refused = enforcing.agent.request(
                kube.Request(
                    "POST", f"/api/v1/namespaces/{armed.namespace}/pods", running_as_default(f"a{attempt}")
                )
            )
            assert denied(refused, "workload-identity") and "create pods or workloads" in refused.message, (
                refused
            )
            allowed = enforcing.agent.request(
                kube.Request(
                    "POST", f"/api/v1/namespaces/{harmless.namespace}/pods", running_as_default(f"h{attempt}")
                )
            )
            assert allowed.status == 201, allowed
