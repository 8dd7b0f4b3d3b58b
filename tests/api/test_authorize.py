"""The SubjectAccessReview contract of ``POST /authorize`` through the real FastAPI app.

The transport is tested with a small test-only guard family (``widget-read``) injected into the
registry, because the shipped access checks live in their own families. The issue's table of rows is
then replayed against the real shipped policy; each row runs as soon as the guard it needs exists.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import fastapi.testclient
import pytest

from tests import reviews
from webhook import app, attributes, engine, guards, policy
from webhook.guards import base

V1, V1BETA1 = "authorization.k8s.io/v1", "authorization.k8s.io/v1beta1"
NO_OPINION = {"allowed": False, "denied": False}
TEST_GUARD = "widget-read"


class _WidgetSettings(base.GuardSettings):
    """Only ``mode``."""


def _widget_check(request: attributes.AccessRequest, _: _WidgetSettings, __: base.Context) -> Iterator[str]:
    if request.resource == "widgets" and request.verb in ("get", "list", "watch"):
        where = f' "{request.name}"' if request.name else ""
        yield f"reading widgets{where} is not allowed for agents"
    if request.path.startswith("/debug/"):
        yield f"{request.verb} {request.path} is not allowed for agents"


def _crash(*_: object) -> Iterator[str]:
    raise KeyError("resourceAttributes")


WIDGETS = base.Family(id=TEST_GUARD, summary="test only", settings=_WidgetSettings, access=_widget_check)
CRASHING = base.Family(id="crashing-access", summary="test only", settings=_WidgetSettings, access=_crash)


def _with(*extra: base.Family[Any]) -> policy.Policy:
    """The shipped policy, loaded with test-only families registered next to the shipped ones."""
    return policy.load(reviews.RULES, families=guards.discover().with_families(*extra))


@pytest.fixture
def decisions() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def widget_policy() -> policy.Policy:
    return _with(WIDGETS)


def _client(
    loaded: policy.Policy, decisions: list[dict[str, Any]], **kwargs: Any
) -> fastapi.testclient.TestClient:
    return fastapi.testclient.TestClient(
        app.create_app(app.State(engine.Engine(loaded), **kwargs), on_decision=decisions.append)
    )


@pytest.fixture
def client(
    widget_policy: policy.Policy, decisions: list[dict[str, Any]]
) -> Iterator[fastapi.testclient.TestClient]:
    with _client(widget_policy, decisions) as c:
        yield c


def sar(
    verb: str = "get",
    resource: str = "widgets",
    *,
    api_version: str = V1,
    user: dict[str, Any] | None = None,
    group: str = "",
    version: str = "v1",
    subresource: str = "",
    namespace: str = "default",
    name: str = "",
    path: str = "",
) -> dict[str, Any]:
    """A SubjectAccessReview as the kube-apiserver's webhook authorizer sends it."""
    who = user if user is not None else reviews.AGENT
    spec: dict[str, Any] = {"user": who["username"]}
    if who.get("uid"):
        spec["uid"] = who["uid"]
    if who.get("groups"):
        spec["groups" if api_version == V1 else "group"] = who["groups"]
    if who.get("extra"):
        spec["extra"] = who["extra"]
    if path:
        spec["nonResourceAttributes"] = {"path": path, "verb": verb}
    else:
        attrs = {
            "namespace": namespace,
            "verb": verb,
            "group": group,
            "version": version,
            "resource": resource,
            "subresource": subresource,
            "name": name,
        }
        spec["resourceAttributes"] = {k: v for k, v in attrs.items() if v}  # Go's omitempty
    return {
        "kind": "SubjectAccessReview",
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": {"allowed": False},
    }


def _status(client: fastapi.testclient.TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/authorize", json=payload)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body.keys() == {"apiVersion", "kind", "status"}
    assert body["apiVersion"] == payload["apiVersion"] and body["kind"] == "SubjectAccessReview"
    assert body["status"]["allowed"] is False, "the guard never grants, it only subtracts"
    status: dict[str, Any] = body["status"]
    return status


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_agent_read_is_denied_with_the_guard_reason(
    client: fastapi.testclient.TestClient, decisions: list[dict[str, Any]], api_version: str
) -> None:
    status = _status(client, sar("get", name="w1", api_version=api_version))
    assert status == {
        "allowed": False,
        "denied": True,
        "reason": '[widget-read] reading widgets "w1" is not allowed for agents',
    }
    [entry] = decisions
    assert entry["endpoint"] == "authorize" and entry["decision"] == "deny" and entry["allowed"] is False
    assert entry["user"] == reviews.AGENT["username"] and entry["agent"] is True
    assert entry["guards"] == [TEST_GUARD] and entry["mode"] == "enforce"
    assert (entry["operation"], entry["resource"], entry["namespace"], entry["name"]) == (
        "get",
        "widgets",
        "default",
        "w1",
    )
    assert entry["messages"] == [status["reason"]]


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_agent_matched_by_group_alone_in_both_versions(
    client: fastapi.testclient.TestClient, api_version: str
) -> None:
    # v1beta1 names the groups field "group": reading the wrong name would let this agent through.
    member = {"username": "alice@example.com", "groups": ["agent-guard.io:agents", "system:authenticated"]}
    payload = sar("watch", user=member, api_version=api_version)
    assert ("group" in payload["spec"]) is (api_version == V1BETA1)
    assert _status(client, payload)["denied"] is True
    assert _status(client, sar("watch", user={"username": "alice@example.com"}, api_version=api_version)) == (
        NO_OPINION
    )


def test_agent_matched_by_extra(widget_policy: policy.Policy, decisions: list[dict[str, Any]]) -> None:
    selector = policy.AgentSelector(
        extra=(policy.ExtraMatch(key="authentication.kubernetes.io/credential-id", value="JTI=abc"),)
    )
    loaded = dataclasses.replace(widget_policy, agents=selector)
    token = {"username": "bob", "extra": {"authentication.kubernetes.io/credential-id": ["JTI=abc"]}}
    other = {"username": "bob", "extra": {"authentication.kubernetes.io/credential-id": ["JTI=xyz"]}}
    null_extra = {"username": "bob", "extra": {"authentication.kubernetes.io/credential-id": None}}
    with _client(loaded, decisions) as client:
        assert _status(client, sar("list", user=token))["denied"] is True
        assert _status(client, sar("list", user=other)) == NO_OPINION
        assert _status(client, sar("list", user=null_extra)) == NO_OPINION


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
@pytest.mark.parametrize("who", [reviews.ADMIN, reviews.CONTROLLER], ids=["admin", "controller"])
def test_non_agents_get_no_opinion(
    client: fastapi.testclient.TestClient,
    decisions: list[dict[str, Any]],
    who: dict[str, Any],
    api_version: str,
) -> None:
    assert _status(client, sar("get", user=who, api_version=api_version)) == NO_OPINION
    [entry] = decisions
    assert entry["agent"] is False and entry["guards"] == [] and entry["decision"] == "allow"


def test_clean_agent_request_gets_no_opinion(
    client: fastapi.testclient.TestClient, decisions: list[dict[str, Any]]
) -> None:
    assert _status(client, sar("list", "pods")) == NO_OPINION
    assert _status(client, sar("delete", "widgets", name="w1")) == NO_OPINION  # only reads are checked
    assert [(e["agent"], e["decision"]) for e in decisions] == [(True, "allow"), (True, "allow")]


def test_non_resource_request(client: fastapi.testclient.TestClient, decisions: list[dict[str, Any]]) -> None:
    status = _status(client, sar("get", path="/debug/pprof/heap"))
    assert status["denied"] is True
    assert status["reason"] == "[widget-read] get /debug/pprof/heap is not allowed for agents"
    assert decisions[0]["resource"] == "/debug/pprof/heap" and decisions[0]["operation"] == "get"
    assert _status(client, sar("get", path="/healthz")) == NO_OPINION


def test_global_dry_run_is_no_opinion_and_logs_would_deny(
    widget_policy: policy.Policy, decisions: list[dict[str, Any]]
) -> None:
    with _client(widget_policy.with_mode("dry-run"), decisions) as client:
        assert _status(client, sar("get", name="w1")) == NO_OPINION
    [entry] = decisions
    assert entry["decision"] == "would-deny" and entry["mode"] == "dry-run" and entry["allowed"] is True
    assert entry["guards"] == [TEST_GUARD]
    assert entry["messages"] == ['[widget-read] reading widgets "w1" is not allowed for agents']


def test_per_guard_dry_run_is_no_opinion(
    widget_policy: policy.Policy, decisions: list[dict[str, Any]]
) -> None:
    settings = {**widget_policy.guards, TEST_GUARD: _WidgetSettings(mode="dry-run")}
    with _client(dataclasses.replace(widget_policy, guards=settings), decisions) as client:
        assert _status(client, sar("list", api_version=V1BETA1)) == NO_OPINION
    assert decisions[0]["decision"] == "would-deny" and decisions[0]["mode"] == "dry-run"


def test_off_guard_is_no_opinion(widget_policy: policy.Policy, decisions: list[dict[str, Any]]) -> None:
    settings = {**widget_policy.guards, TEST_GUARD: _WidgetSettings(mode="off")}
    with _client(dataclasses.replace(widget_policy, guards=settings), decisions) as client:
        assert _status(client, sar("list")) == NO_OPINION
    assert decisions[0]["decision"] == "allow" and decisions[0]["guards"] == []


def test_two_findings_are_one_reason(decisions: list[dict[str, Any]]) -> None:
    twin = dataclasses.replace(WIDGETS, id="widget-read-twin")
    with _client(_with(WIDGETS, twin), decisions) as client:
        status = _status(client, sar("get"))
    assert status["reason"] == (
        "[widget-read] reading widgets is not allowed for agents; "
        "[widget-read-twin] reading widgets is not allowed for agents"
    )
    assert decisions[0]["guards"] == ["widget-read", "widget-read-twin"]


@pytest.mark.parametrize(("mode", "denied"), [("enforce", True), ("dry-run", False)])
def test_crashing_guard_fails_closed_and_names_the_error(
    decisions: list[dict[str, Any]], mode: policy.GlobalMode, denied: bool
) -> None:
    with _client(_with(CRASHING).with_mode(mode), decisions) as client:
        status = _status(client, sar("list", "pods"))
        assert status["denied"] is denied
        assert (
            status["evaluationError"] == "guard crashing-access failed on this request; see the guard's log"
        )
        if denied:
            assert status["reason"].startswith("[crashing-access] internal error while checking this request")
            assert "KeyError" in status["reason"] and "Traceback" not in status["reason"]
        assert _status(client, sar("list", "pods", user=reviews.ADMIN)) == NO_OPINION
    assert decisions[0]["decision"] == ("deny" if denied else "would-deny")


@pytest.mark.parametrize("mode", ["enforce", "dry-run"])
def test_engine_failure_fails_closed_in_every_mode(
    widget_policy: policy.Policy, decisions: list[dict[str, Any]], mode: policy.GlobalMode
) -> None:
    class Broken(engine.Engine):
        def authorize(self, request: attributes.AccessRequest) -> engine.Verdict:
            raise RuntimeError("boom")

    judge = Broken(widget_policy.with_mode(mode))
    with fastapi.testclient.TestClient(
        app.create_app(app.State(judge), on_decision=decisions.append)
    ) as client:
        status = _status(client, sar("list", "pods"))
    assert status["denied"] is True
    assert status["reason"].startswith(
        "[internal-error] the guard failed (RuntimeError); agent requests fail"
    )
    assert "boom" not in status["reason"]
    assert status["evaluationError"] == "guard internal-error failed on this request; see the guard's log"
    [entry] = decisions
    assert entry["decision"] == "deny" and entry["guards"] == ["internal-error"]


def _edited(edit: Any, **kwargs: Any) -> bytes:
    payload = sar(**kwargs)
    edit(payload)
    return json.dumps(payload).encode()


def _both(payload: dict[str, Any]) -> None:
    payload["spec"]["nonResourceAttributes"] = {"path": "/healthz", "verb": "get"}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty body"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "(body)"),
        (_edited(lambda p: p.update(apiVersion="authorization.k8s.io/v2")), "apiVersion"),
        (_edited(lambda p: p.update(apiVersion="admission.k8s.io/v1")), "apiVersion"),
        (_edited(lambda p: p.update(kind="AdmissionReview")), "kind"),
        (_edited(lambda p: p.pop("spec")), "spec: Field required"),
        (_edited(lambda p: p.update(spec="x")), "spec"),
        (_edited(lambda p: p["spec"].pop("resourceAttributes")), "got neither"),
        (_edited(_both), "got both"),
        (_edited(lambda p: p["spec"]["resourceAttributes"].pop("resource")), "resourceAttributes.resource"),
        (
            _edited(lambda p: p["spec"]["resourceAttributes"].update(resource="")),
            "resourceAttributes.resource",
        ),
        (_edited(lambda p: p["spec"]["resourceAttributes"].update(name=["a"])), "resourceAttributes.name"),
        (
            _edited(lambda p: p["spec"]["nonResourceAttributes"].pop("path"), path="/x"),
            "nonResourceAttributes",
        ),
        (_edited(lambda p: p["spec"].update(groups="system:masters")), "spec.groups"),
        (_edited(lambda p: p["spec"].update(extra={"k": "v"})), "spec.extra.k"),
        (_edited(lambda p: p["spec"].update(user=None)), "spec.user"),
        # each version's name for the groups list, and only that one
        (
            _edited(lambda p: p["spec"].update(group=["g"])),
            "spec.group: not a field of authorization.k8s.io/v1",
        ),
        (
            _edited(lambda p: p["spec"].update(groups=p["spec"].pop("group")), api_version=V1BETA1),
            "spec.groups: not a field of authorization.k8s.io/v1beta1, which names the list of groups "
            "spec.group",
        ),
    ],
)
def test_malformed_review_is_400_with_a_named_problem(
    client: fastapi.testclient.TestClient, content: bytes, needle: str
) -> None:
    answer = client.post("/authorize", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("malformed SubjectAccessReview: ") and needle in error, error
    assert client.post("/authorize", json=sar()).status_code == 200  # still serving


def test_oversized_body_is_413_by_header_and_by_stream(
    widget_policy: policy.Policy, decisions: list[dict[str, Any]]
) -> None:
    with _client(widget_policy, decisions, max_body=1024) as client:
        answer = client.post("/authorize", content=b"x" * 2048)
        assert answer.status_code == 413 and "exceeds the limit of 1024 bytes" in answer.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: must stop while reading
            yield from (b"y" * 512 for _ in range(4))

        assert client.post("/authorize", content=chunks()).status_code == 413
        assert client.post("/authorize", json=sar()).status_code == 200
    assert len(decisions) == 1


def test_only_post(client: fastapi.testclient.TestClient) -> None:
    assert client.get("/authorize").status_code == 405


# --- The rows against the real shipped policy --------------------------------------------
# Which family owns a row is the families' business; the rows say which ids may answer. A row runs
# once every id it names is registered (the access checks land with their own guard families).

SECRET, RBAC, TAMPER = "secret-access", "rbac-escalation", "guard-tamper"
NAMESPACE = "namespace-delete"
GUARD_NS = "agent-guard-system"


@dataclasses.dataclass(frozen=True)
class Row:
    verb: str
    resource: str
    expect: frozenset[str] | None  # guard ids of which at least one must deny; None: no opinion
    fields: dict[str, Any]


def _row(
    verb: str,
    resource: str,
    expect: set[str] | None,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str = "default",
    name: str = "",
) -> Any:
    what = f"{verb} {group + '/' if group else ''}{resource}{'/' + subresource if subresource else ''}"
    where = {"default": "", "": " (no namespace)"}.get(namespace, f" in {namespace}")
    fields = {"group": group, "subresource": subresource, "namespace": namespace, "name": name}
    return pytest.param(
        Row(verb, resource, frozenset(expect) if expect else None, fields),
        id=f"{what}{where}",
    )


_WRITES = ("create", "update", "patch", "delete", "deletecollection")
_ADMISSION_REGISTRATION = (
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
)

ROWS = [
    *(
        _row(verb, "secrets", {SECRET}, name="db" if verb == "get" else "")
        for verb in ("get", "list", "watch")
    ),
    _row("list", "secrets", {SECRET}, namespace=""),  # all namespaces
    *(
        _row(verb, resource, {SECRET}, subresource=sub, namespace=ns, name="n1")
        for resource, sub, ns in (
            ("nodes", "proxy", ""),
            ("pods", "exec", "default"),
            ("pods", "attach", "default"),
            ("pods", "portforward", "default"),
            ("services", "proxy", "default"),
        )
        for verb in ("get", "create")
    ),
    _row("create", "serviceaccounts", {SECRET}, subresource="token", name="default"),
    *(
        _row("impersonate", resource, {RBAC}, namespace="")
        for resource in ("users", "groups", "serviceaccounts")
    ),
    _row(
        "impersonate", "userextras", {RBAC}, group="authentication.k8s.io", subresource="scopes", namespace=""
    ),
    _row("escalate", "clusterroles", {RBAC}, group="rbac.authorization.k8s.io", namespace=""),
    _row("escalate", "roles", {RBAC}, group="rbac.authorization.k8s.io"),
    _row(
        "bind", "clusterroles", {RBAC}, group="rbac.authorization.k8s.io", namespace="", name="cluster-admin"
    ),
    *(
        _row(verb, resource, {TAMPER}, group="admissionregistration.k8s.io", namespace="", name="agent-guard")
        for resource in _ADMISSION_REGISTRATION
        for verb in _WRITES
    ),
    *(
        _row(verb, resource, {TAMPER}, group=group, namespace=GUARD_NS, name="agent-guard")
        for verb, group, resource in (
            ("delete", "apps", "deployments"),
            ("patch", "apps", "deployments"),
            ("update", "", "services"),
            ("delete", "", "secrets"),
            ("create", "", "pods"),
            ("delete", "rbac.authorization.k8s.io", "rolebindings"),
            ("update", "rbac.authorization.k8s.io", "roles"),
        )
    ),
    _row("delete", "namespaces", {TAMPER, NAMESPACE}, namespace=GUARD_NS, name=GUARD_NS),
    _row("patch", "namespaces", {TAMPER}, namespace=GUARD_NS, name=GUARD_NS),
    _row(
        "update",
        "certificatesigningrequests",
        {RBAC},
        group="certificates.k8s.io",
        subresource="approval",
        namespace="",
        name="csr-1",
    ),
    # what kubectl auth can-i asks: answered as admission would (issue #14)
    _row("delete", "namespaces", {NAMESPACE}, namespace="", name="prod"),
    _row("deletecollection", "namespaces", {NAMESPACE}, namespace=""),
    _row("update", "namespaces", {NAMESPACE}, subresource="finalize", namespace="", name="prod"),
    _row(
        "approve",
        "signers",
        {RBAC},
        group="certificates.k8s.io",
        namespace="",
        name="kubernetes.io/kube-apiserver-client",
    ),
    *(
        _row(verb, "users", {RBAC}, group="authentication.k8s.io", namespace="")
        for verb in ("impersonate:user-info", "impersonate-on:user-info:list")
    ),
    _row("impersonate:serviceaccount", "serviceaccounts", {RBAC}, name="deployer"),
    *(
        _row(verb, "apiservices", {TAMPER}, group="apiregistration.k8s.io", namespace="", name="v1.")
        for verb in _WRITES
    ),
    # OPTIONS, PROPFIND, … on a proxy path reach the authorizer without a verb
    *(
        _row("", resource, {SECRET}, subresource="proxy", namespace=ns, name="n1")
        for resource, ns in (("pods", "default"), ("services", "default"), ("nodes", ""))
    ),
    # RBAC decides everything else
    _row("get", "apiservices", None, group="apiregistration.k8s.io", namespace="", name="v1."),
    _row("get", "signers", None, group="certificates.k8s.io", namespace="", name="example.com/x"),
    _row("get", "namespaces", None, namespace="", name="prod"),
    _row("patch", "namespaces", None, namespace="", name="prod"),
    _row("update", "namespaces", None, subresource="status", namespace="", name="prod"),
    _row("", "configmaps", None),
    _row("list", "pods", None),
    _row("get", "pods", None, name="web-0"),
    _row("watch", "configmaps", None),
    _row("create", "deployments", None, group="apps"),
    _row("get", "pods", None, subresource="log", name="web-0"),
    _row("list", "validatingwebhookconfigurations", None, group="admissionregistration.k8s.io", namespace=""),
    _row("list", "pods", None, namespace=GUARD_NS),
    _row("get", "nodes", None, namespace="", name="node-1"),
]


@pytest.fixture(scope="module")
def shipped_client() -> Iterator[fastapi.testclient.TestClient]:
    loaded = policy.load(reviews.RULES).with_mode("enforce")
    with fastapi.testclient.TestClient(
        app.create_app(app.State(engine.Engine(loaded)), on_decision=lambda _: None)
    ) as c:
        yield c


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
@pytest.mark.parametrize("row", ROWS)
def test_shipped_policy_rows(
    shipped_client: fastapi.testclient.TestClient, row: Row, api_version: str
) -> None:
    status = _status(shipped_client, sar(row.verb, row.resource, api_version=api_version, **row.fields))
    if row.expect is None:
        assert status == NO_OPINION
    else:
        assert status["denied"] is True, status
        fired = set(re.findall(r"(?:^|; )\[([a-z0-9-]+)\] ", status["reason"]))
        assert fired == row.expect, status["reason"]
        assert "evaluationError" not in status
    for who in (reviews.ADMIN, reviews.CONTROLLER):
        again = sar(row.verb, row.resource, api_version=api_version, user=who, **row.fields)
        assert _status(shipped_client, again) == NO_OPINION
