"""The guard's authorizer in front of RBAC: what admission never sees, stopped for the agent only.

The apiserver runs with ``--authorization-config``: Node, then the guard's ``/authorize`` (called for
agents only, ``failurePolicy: Deny``), then RBAC. Secret reads, the ``impersonate`` verb, ``nodes/proxy``
and writes to webhook configurations never reach an admission webhook. The agent, bound to
``cluster-admin``, gets a 403 whose message ends in the guard's ``[guard-id]`` reason, through the
Python client an MCP server uses and through raw requests; the same requests by the admin
(``system:masters``) and by a non-agent ServiceAccount bound to ``cluster-admin`` succeed, and the
guard's log shows it was never even asked about them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer, require_guard
from tests.e2e.controlplane import processes
from tests.e2e.test_attacks import assert_forbidden_by_authorizer
from webhook import manifests

pytestmark = pytest.mark.e2e

SECRET = "db-credentials"
OTHERS = ("admin", "controller")  # system:masters, and a non-agent ServiceAccount bound to cluster-admin
VWC_PATH = f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}"
CONTROLLER_USER = f"system:serviceaccount:{stack.CONTROLLER_NAMESPACE}:{stack.CONTROLLER_NAME}"
AGENT_USER = f"system:serviceaccount:{stack.AGENT_NAMESPACE}:{stack.AGENT_NAME}"
LOOPBACK = "127.0.0.1"


@pytest.fixture(autouse=True)
def authorizer(e2e: stack.Stack) -> None:
    """Every scenario here needs the apiserver to call the guard's authorizer (skipped on kind)."""
    require_authorizer(e2e)


@pytest.fixture
def scene(enforcing: stack.Stack, new_scene: SceneFactory) -> attacks.Scene:
    """A fresh namespace holding one Secret (and one Pod object), made by the admin."""
    made = new_scene("authz")
    secret = {"metadata": {"name": SECRET}, "stringData": {"password": secrets.token_urlsafe(12)}}
    made.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{made.namespace}/secrets", secret))
    made.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{made.namespace}/pods", attacks.pod("web")))
    return made


def identity(e2e: stack.Stack, name: str) -> kube.Client:
    client: kube.Client = getattr(e2e, name)
    return client


def never_asked_about(e2e: stack.Stack, client: kube.Client) -> None:
    """No ``/authorize`` line for this caller: the matchConditions (or system:masters) kept it away."""
    user = CONTROLLER_USER if client is e2e.controller else processes.ADMIN_USER
    asked = [
        d
        for d in stack.decisions(e2e.local_guard().output)
        if d["endpoint"] == "authorize" and d["user"] == user
    ]
    assert not asked, f"the guard was asked about {user}: {asked[:3]}"


def refused(call: Callable[[], Any]) -> kube.Reply:
    """The apiserver's answer to a typed client call that must raise ``ApiException``."""
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call()
    return kube.refusal(caught.value)


# --- Secrets: get, list, watch ----------------------------------------------------------------


def _get(core: Any, namespace: str) -> list[str]:
    return [core.read_namespaced_secret(SECRET, namespace).metadata.name]


def _list(core: Any, namespace: str) -> list[str]:
    return [item.metadata.name for item in core.list_namespaced_secret(namespace).items]


def _list_all_namespaces(core: Any, namespace: str) -> list[str]:
    found = core.list_secret_for_all_namespaces(field_selector=f"metadata.namespace={namespace}")
    return [item.metadata.name for item in found.items]


def _watch(core: Any, namespace: str) -> list[str]:
    """The first event of a watch (an ADDED per existing Secret comes first), then stop."""
    watching: Any = kubernetes.watch  # the client's watch module has no type hints
    watch = watching.Watch()
    try:
        for event in watch.stream(core.list_namespaced_secret, namespace, timeout_seconds=5):
            return [event["raw_object"]["metadata"]["name"]]
        return []
    finally:
        watch.stop()


READS: dict[str, Callable[[Any, str], list[str]]] = {
    "get": _get,
    "list": _list,
    "list-all-namespaces": _list_all_namespaces,
    "watch": _watch,
}
RAW_WATCHES: dict[str, Callable[[str], kube.Request]] = {
    "namespace": lambda ns: kube.Request(
        "GET", f"/api/v1/namespaces/{ns}/secrets", query=(("watch", "true"),)
    ),
    "one-secret": lambda ns: kube.Request(
        "GET",
        f"/api/v1/namespaces/{ns}/secrets",
        query=(("watch", "true"), ("fieldSelector", f"metadata.name={SECRET}")),
    ),
    "all-namespaces": lambda ns: kube.Request("GET", "/api/v1/secrets", query=(("watch", "1"),)),
}


@pytest.mark.parametrize("read", list(READS))
def test_agent_cannot_read_secrets_through_the_client(
    read: str, scene: attacks.Scene, enforcing: stack.Stack
) -> None:
    require_guard("secret-access", enforcing)
    reply = refused(lambda: READS[read](enforcing.agent.core, scene.namespace))
    assert_forbidden_by_authorizer(reply, "secret-access")


@pytest.mark.parametrize("watch", list(RAW_WATCHES))
def test_agent_cannot_watch_secrets_with_a_raw_request(
    watch: str, scene: attacks.Scene, enforcing: stack.Stack
) -> None:
    require_guard("secret-access", enforcing)
    reply = enforcing.agent.request(RAW_WATCHES[watch](scene.namespace))
    assert_forbidden_by_authorizer(reply, "secret-access")
    assert "cannot watch resource" in reply.message, reply.message


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("who", OTHERS)
def test_others_read_secrets(who: str, read: str, scene: attacks.Scene, enforcing: stack.Stack) -> None:
    client = identity(enforcing, who)
    assert READS[read](client.core, scene.namespace) == [SECRET]
    never_asked_about(enforcing, client)


# --- the guard's own registration -------------------------------------------------------------

TAMPERING: dict[str, kube.Request] = {
    "delete": kube.Request("DELETE", VWC_PATH),
    "fail-open": kube.Request(
        "PATCH",
        VWC_PATH,
        [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}],
        content_type="application/json-patch+json",
    ),
}


def test_agent_cannot_delete_the_webhook_configuration_through_the_client(enforcing: stack.Stack) -> None:
    require_guard("guard-tamper", enforcing)
    api = enforcing.agent.admissionregistration
    reply = refused(lambda: api.delete_validating_webhook_configuration(manifests.CONFIGURATION_NAME))
    assert_forbidden_by_authorizer(reply, "guard-tamper")
    still = enforcing.admin.ok(kube.Request("GET", VWC_PATH))
    assert "deletionTimestamp" not in still.body["metadata"], still.body["metadata"]


@pytest.mark.parametrize("tamper", list(TAMPERING))
def test_agent_cannot_change_the_webhook_configuration(tamper: str, enforcing: stack.Stack) -> None:
    require_guard("guard-tamper", enforcing)
    before = enforcing.admin.ok(kube.Request("GET", VWC_PATH)).body
    reply = enforcing.agent.request(TAMPERING[tamper])
    assert_forbidden_by_authorizer(reply, "guard-tamper")
    after = enforcing.admin.ok(kube.Request("GET", VWC_PATH)).body
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["webhooks"][0]["failurePolicy"] == "Fail"


def test_admin_deletes_and_recreates_the_webhook_configuration(enforcing: stack.Stack) -> None:
    api = enforcing.admin.admissionregistration
    try:
        api.delete_validating_webhook_configuration(manifests.CONFIGURATION_NAME)
        assert enforcing.admin.request(kube.Request("GET", VWC_PATH)).status == 404
    finally:
        enforcing.webhook.reinstall(enforcing.local_guard())  # and proves the apiserver calls the guard again
    assert enforcing.admin.request(kube.Request("GET", VWC_PATH)).status == 200


@pytest.mark.parametrize("who", OTHERS)
def test_others_write_webhook_configurations(who: str, enforcing: stack.Stack) -> None:
    """A throw-away configuration without webhooks: created and deleted, the guard never asked."""
    client = identity(enforcing, who)
    name = f"e2e-throwaway-{secrets.token_hex(3)}"
    client.ok(kube.Request("POST", stack.WEBHOOK_CONFIGURATIONS, {"metadata": {"name": name}}))
    client.admissionregistration.delete_validating_webhook_configuration(name)
    assert (
        enforcing.admin.request(kube.Request("GET", f"{stack.WEBHOOK_CONFIGURATIONS}/{name}")).status == 404
    )
    never_asked_about(enforcing, client)


# --- impersonation ----------------------------------------------------------------------------

IMPERSONATING: dict[str, tuple[tuple[str, str], ...]] = {
    "admin-user": (("Impersonate-User", processes.ADMIN_USER),),
    "service-account": (("Impersonate-User", CONTROLLER_USER),),
    "masters-group": (("Impersonate-User", "jane"), ("Impersonate-Group", "system:masters")),
}


@pytest.mark.parametrize("who", list(IMPERSONATING))
def test_agent_cannot_impersonate(who: str, scene: attacks.Scene, enforcing: stack.Stack) -> None:
    require_guard("rbac-escalation", enforcing)
    configmaps = f"/api/v1/namespaces/{scene.namespace}/configmaps"
    assert enforcing.agent.request(kube.Request("GET", configmaps)).status == 200  # without impersonation
    reply = enforcing.agent.request(kube.Request("GET", configmaps, headers=IMPERSONATING[who]))
    assert_forbidden_by_authorizer(reply, "rbac-escalation")
    # Up to 1.36 the apiserver asks about "impersonate"; 1.37 asks about the constrained verbs first
    # (KEP-5284, e.g. impersonate-on:user-info:list), which the guard denies the same way.
    assert re.search(r"cannot impersonate(-on:[a-z-]+:[a-z]+)? resource", reply.message), reply.message


@pytest.mark.parametrize("who", OTHERS)
def test_others_impersonate(who: str, scene: attacks.Scene, enforcing: stack.Stack) -> None:
    client = identity(enforcing, who)
    headers = (("Impersonate-User", CONTROLLER_USER),)
    reply = client.request(
        kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/secrets", headers=headers)
    )
    assert reply.status == 200 and [i["metadata"]["name"] for i in reply.body["items"]] == [SECRET], reply
    never_asked_about(enforcing, client)


def test_admin_impersonating_the_agent_is_judged_as_the_agent(
    scene: attacks.Scene, enforcing: stack.Stack
) -> None:
    """The authorizer sees the impersonated identity, so the agent's limits hold whoever sends it."""
    require_guard("secret-access", enforcing)
    headers = (("Impersonate-User", AGENT_USER),)
    secrets_path = f"/api/v1/namespaces/{scene.namespace}/secrets"
    reply = enforcing.admin.request(kube.Request("GET", secrets_path, headers=headers))
    assert_forbidden_by_authorizer(reply, "secret-access")


# --- nodes/proxy ------------------------------------------------------------------------------


def routable_address() -> str:
    """This host's address on its route to TEST-NET-1 (a UDP connect sends nothing), else loopback.

    The apiserver proxies only to global unicast addresses (it answers 400 "address not allowed" for
    loopback), so only on a host with such an address can the suite watch it dial the kubelet.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = ipaddress.ip_address(probe.getsockname()[0])
        except OSError:
            return LOOPBACK
    if address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified:
        return LOOPBACK
    return str(address)


class Kubelet:
    """A TCP listener standing in for a node's kubelet: counts connections, closes each at once."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.create_server((address, 0))
        self.socket.settimeout(0.1)
        self.port: int = self.socket.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            connection.close()
            self.connections += 1

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.socket.close()


@pytest.fixture
def node(enforcing: stack.Stack) -> Iterator[tuple[str, Kubelet]]:
    """A Node object whose kubelet endpoint is our listener: an authorized proxy request dials it."""
    kubelet = Kubelet(routable_address())
    name = f"e2e-node-{secrets.token_hex(3)}"
    admin = enforcing.admin
    admin.ok(kube.Request("POST", "/api/v1/nodes", {"metadata": {"name": name}}))
    status = {
        "status": {
            "addresses": [{"type": "InternalIP", "address": kubelet.address}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
        }
    }
    path = f"/api/v1/nodes/{name}/status"
    admin.ok(kube.Request("PATCH", path, status, content_type="application/merge-patch+json"))
    with contextlib.closing(kubelet):
        yield name, kubelet


def test_agent_cannot_proxy_to_a_kubelet(node: tuple[str, Kubelet], enforcing: stack.Stack) -> None:
    require_guard("secret-access", enforcing)
    name, kubelet = node
    reply = enforcing.agent.request(kube.Request("GET", f"/api/v1/nodes/{name}/proxy/configz"))
    assert_forbidden_by_authorizer(reply, "secret-access")
    assert kubelet.connections == 0, "the apiserver dialed the kubelet for the agent"


@pytest.mark.parametrize("who", OTHERS)
def test_others_get_past_the_authorizer_to_the_kubelet(
    who: str, node: tuple[str, Kubelet], enforcing: stack.Stack
) -> None:
    """The same request by others is authorized: the apiserver dials the (fake) kubelet, or, on a
    host with only a loopback address, refuses the address (which it checks after authorization)."""
    client = identity(enforcing, who)
    name, kubelet = node
    reply = client.request(kube.Request("GET", f"/api/v1/nodes/{name}/proxy/configz"))
    if kubelet.address == LOOPBACK:
        assert reply.status == 400 and reply.message == "address not allowed", reply
    else:
        assert reply.status != 403, reply
        assert kubelet.connections >= 1, f"the apiserver never dialed the kubelet: {reply}"
    never_asked_about(enforcing, client)


# --- ordinary reads ---------------------------------------------------------------------------


def test_agent_lists_pods(scene: attacks.Scene, enforcing: stack.Stack) -> None:
    """RBAC decides what the guard has no opinion on: the guard was asked and did not object."""
    core = enforcing.agent.core
    assert [pod.metadata.name for pod in core.list_namespaced_pod(scene.namespace).items] == ["web"]
    everywhere = core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={scene.namespace}")
    assert [pod.metadata.name for pod in everywhere.items] == ["web"]
    asked = [
        d
        for d in stack.decisions(enforcing.local_guard().output)
        if d["endpoint"] == "authorize" and d["resource"] == "pods" and d["namespace"] == scene.namespace
    ]
    assert asked and all(d["decision"] == "allow" and d["user"] == AGENT_USER for d in asked), asked


# --- kubectl auth can-i agrees with admission (issue #14) ------------------------------------

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# (id, resourceAttributes without namespace, the guard that must answer "denied")
CAN_I: tuple[tuple[str, dict[str, str], str], ...] = (
    ("delete-namespaces", {"verb": "delete", "resource": "namespaces"}, "namespace-delete"),
    (
        "delete-namespace",
        {"verb": "delete", "resource": "namespaces", "name": "kube-system"},
        "namespace-delete",
    ),
    (
        "deletecollection-namespaces",
        {"verb": "deletecollection", "resource": "namespaces"},
        "namespace-delete",
    ),
    (
        "finalize-namespace",
        {"verb": "update", "resource": "namespaces", "subresource": "finalize"},
        "namespace-delete",
    ),
    ("exec", {"verb": "create", "resource": "pods", "subresource": "exec"}, "secret-access"),
    ("exec-websocket", {"verb": "get", "resource": "pods", "subresource": "exec"}, "secret-access"),
    ("attach", {"verb": "create", "resource": "pods", "subresource": "attach"}, "secret-access"),
    ("portforward", {"verb": "get", "resource": "pods", "subresource": "portforward"}, "secret-access"),
    (
        "token-request",
        {"verb": "create", "resource": "serviceaccounts", "subresource": "token"},
        "secret-access",
    ),
    (
        "approve-signer",
        {
            "verb": "approve",
            "group": "certificates.k8s.io",
            "resource": "signers",
            "name": "kubernetes.io/kube-apiserver-client",
        },
        "rbac-escalation",
    ),
    (
        "constrained-impersonation",
        {"verb": "impersonate:user-info", "group": "authentication.k8s.io", "resource": "users"},
        "rbac-escalation",
    ),
    (
        "patch-apiservice",
        {"verb": "patch", "group": "apiregistration.k8s.io", "resource": "apiservices", "name": "v1."},
        "guard-tamper",
    ),
)


def can_i(client: kube.Client, attributes: dict[str, str], namespace: str) -> dict[str, Any]:
    """What ``kubectl auth can-i`` sends: a SelfSubjectAccessReview, answered by the authorizer chain."""
    spec = {"resourceAttributes": {"namespace": namespace, **attributes}}
    reply = client.ok(
        kube.Request(
            "POST",
            SSAR,
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec},
        )
    )
    status: dict[str, Any] = reply.body["status"]
    return status


@pytest.mark.parametrize(("attributes", "guard"), [pytest.param(a, g, id=i) for i, a, g in CAN_I])
def test_can_i_says_no_where_admission_would(
    attributes: dict[str, str], guard: str, scene: attacks.Scene, enforcing: stack.Stack
) -> None:
    require_guard(guard, enforcing)
    namespace = (
        "" if attributes["resource"] in ("namespaces", "signers", "users", "apiservices") else scene.namespace
    )
    answer = can_i(enforcing.agent, attributes, namespace)
    assert answer.get("allowed") is not True and answer.get("denied") is True, answer
    assert answer["reason"].startswith(f"[{guard}]"), answer
    admin = can_i(enforcing.admin, attributes, namespace)
    assert admin["allowed"] is True, admin


def test_can_i_still_says_yes_to_ordinary_work(scene: attacks.Scene, enforcing: stack.Stack) -> None:
    for attributes in (
        {"verb": "create", "resource": "namespaces"},
        {"verb": "get", "resource": "pods", "subresource": "log"},
        {"verb": "patch", "group": "apps", "resource": "deployments"},
        {"verb": "list", "group": "apiregistration.k8s.io", "resource": "apiservices"},
    ):
        answer = can_i(enforcing.agent, attributes, scene.namespace)
        assert answer["allowed"] is True and not answer.get("denied"), (attributes, answer)


# --- verbs the apiserver cannot name -----------------------------------------------------------


@pytest.mark.parametrize("method", ["OPTIONS", "PROPFIND"])
def test_methods_without_a_verb_on_proxy_paths_get_a_reason(
    method: str, scene: attacks.Scene, enforcing: stack.Stack
) -> None:
    """The apiserver authorizes OPTIONS/PROPFIND on a proxy path with an empty verb; the guard used to
    refuse that review (HTTP 400), which the apiserver turned into a bare HTTP 500."""
    require_guard("secret-access", enforcing)
    path = f"/api/v1/namespaces/{scene.namespace}/pods/web/proxy/"
    reply = enforcing.agent.request(kube.Request(method, path))
    assert_forbidden_by_authorizer(reply, "secret-access")
    admin = enforcing.admin.request(kube.Request(method, path))
    assert admin.status not in (403, 500), admin


# --- the escalate/bind checks RBAC performs while storing roles and bindings ----------------


def test_rbac_prechecks_are_logged_for_what_they_are(scene: attacks.Scene, enforcing: stack.Stack) -> None:
    """Creating a Role makes RBAC ask ``escalate``, a binding ``bind``: the guard denies both, RBAC then
    checks the agent holds every permission granted (cluster-admin does) and stores the object. The
    decision log says the denial was not final, instead of claiming a refused request."""
    require_guard("rbac-escalation", enforcing)
    rbac = f"{attacks.RBAC}/namespaces/{scene.namespace}"
    role = {
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    created = enforcing.agent.request(kube.Request("POST", f"{rbac}/roles", role))
    assert created.status == 201, created
    # A binding to a role the guard has not seen yet is refused with "retry": wait for its watch.
    enforcing.wait_for_rbac_view("Role", created.body["metadata"]["resourceVersion"])
    binding = {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": scene.namespace}],
    }
    assert enforcing.agent.request(kube.Request("POST", f"{rbac}/rolebindings", binding)).status == 201
    logged = {
        d["operation"]: d
        for d in stack.decisions(enforcing.local_guard().output)
        if d["endpoint"] == "authorize"
        and d["namespace"] == scene.namespace
        and d["operation"] in ("escalate", "bind")
    }
    assert set(logged) == {"escalate", "bind"}, logged
    for entry in logged.values():
        assert entry["decision"] == "deny" and entry["final"] is False, entry
        assert "fall back" in entry["note"], entry
