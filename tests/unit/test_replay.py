"""``agent-guard replay`` over synthetic audit logs shaped like the apiserver's own.

The events copy the ``audit.k8s.io/v1`` Event shape the apiserver writes to ``--audit-log-path``
(JSON lines; RequestReceived then ResponseComplete per request at level Request/RequestResponse).
Replaying the audit log a real kube-apiserver writes during the e2e run is the e2e suite's job.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests import probe, reviews
from webhook import cli, guards

AGENT = {
    "username": "system:serviceaccount:mcp-system:mcp-k8s-go",
    "uid": "5a4d8a62-3b0e-4d6c-9a55-6f0f7c1d2e3f",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:mcp-system", "system:authenticated"],
    "extra": {
        "authentication.kubernetes.io/credential-id": ["JTI=8f0c6d7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"],
        "authentication.kubernetes.io/node-name": ["worker-1"],
        "authentication.kubernetes.io/pod-name": ["mcp-k8s-go-6d5f7c9b8-x2x7q"],
        "authentication.kubernetes.io/pod-uid": ["0b1c7d8e-1111-2222-3333-444455556666"],
    },
}
ADMIN = {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]}
CONTROLLER = {
    "username": "system:serviceaccount:kube-system:namespace-controller",
    "uid": "b7b2c0a1-0000-4000-8000-000000000001",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
}
RBAC_ALLOW = {
    "authorization.k8s.io/decision": "allow",
    "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "mcp-admin" of ClusterRole '
    '"cluster-admin" to ServiceAccount "mcp-k8s-go/mcp-system"',
}
_counter = iter(range(1, 10_000))


def _event(
    verb: str,
    uri: str,
    user: dict[str, Any],
    ref: dict[str, Any] | None,
    *,
    stage: str = "ResponseComplete",
    level: str = "RequestResponse",
    request_object: Any = None,
    response_object: Any = None,
    code: int = 200,
    impersonated: dict[str, Any] | None = None,
    audit_id: str | None = None,
) -> dict[str, Any]:
    n = next(_counter)
    received = f"2026-11-24T09:{n // 60:02d}:{n % 60:02d}.{n:06d}Z"
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit_id or f"6c1f0a2e-{n:04d}-4b7e-9d3c-1a2b3c4d5e6f",
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": ["10.244.0.12"],
        "userAgent": "mcp-k8s-go/0.3.1 (linux/amd64) kubernetes/$Format",
        "requestReceivedTimestamp": received,
        "stageTimestamp": received,
    }
    if impersonated is not None:
        event["impersonatedUser"] = impersonated
    if ref is not None:
        event["objectRef"] = ref
    if stage != "RequestReceived":
        event["responseStatus"] = {"metadata": {}, "code": code}
        event["annotations"] = RBAC_ALLOW
    if level in ("Request", "RequestResponse") and request_object is not None:
        event["requestObject"] = request_object
    if level == "RequestResponse" and response_object is not None and stage != "RequestReceived":
        event["responseObject"] = response_object
    return event


def _ns(name: str, phase: str = "Active") -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": "d0a1e2b3-c4d5-e6f7-0811-223344556677", "resourceVersion": "4711"},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": phase},
    }


def _delete_options() -> dict[str, Any]:
    return {
        "kind": "DeleteOptions",
        "apiVersion": "meta.k8s.io/__internal",
        "propagationPolicy": "Background",
    }


def _ref(
    resource: str, name: str = "", namespace: str = "", group: str = "", version: str = "v1", **extra: str
) -> dict[str, Any]:
    ref = {"resource": resource, "apiGroup": group, "apiVersion": version}
    if namespace:
        ref["namespace"] = namespace
    if name:
        ref["name"] = name
    ref.update(extra)
    return ref


def session() -> list[dict[str, Any]]:
    """An agent session with two namespace deletions among harmless calls, plus admin and controller work."""
    prod_id = "0d9b6c1e-aaaa-4b7e-9d3c-000000000001"
    return [
        _event("list", "/api/v1/namespaces/default/pods?limit=500", AGENT, _ref("pods", namespace="default")),
        _event(
            "delete",
            "/api/v1/namespaces/prod",
            AGENT,
            _ref("namespaces", "prod", "prod"),
            stage="RequestReceived",
            request_object=_delete_options(),
            audit_id=prod_id,
        ),
        _event(
            "delete",
            "/api/v1/namespaces/prod",
            AGENT,
            _ref("namespaces", "prod", "prod"),
            request_object=_delete_options(),
            response_object=_ns("prod", "Terminating"),
            audit_id=prod_id,
        ),
        _event(
            "create",
            "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-client-side-apply",
            AGENT,
            _ref("configmaps", "settings", "default"),
            code=201,
            request_object={
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "settings", "namespace": "default"},
                "data": {"mode": "fast"},
            },
        ),
        _event(
            "delete",
            "/api/v1/namespaces/kube-system",
            AGENT,
            _ref("namespaces", "kube-system", "kube-system"),
            level="Metadata",
            code=403,
        ),
        _event(
            "create",
            "/api/v1/namespaces/default/pods/web-0/exec?command=sh&command=-c&command=env&container=app&stdout=true&stderr=true",
            AGENT,
            _ref("pods", "web-0", "default", subresource="exec"),
            code=101,
        ),
        _event(
            "patch",
            "/api/v1/namespaces/prod?fieldManager=kubectl-label",
            AGENT,
            _ref("namespaces", "prod", "prod"),
            request_object={"metadata": {"labels": {"team": "shop"}}},
            response_object=_ns("prod"),
        ),
        _event(
            "delete",
            "/api/v1/namespaces/scratch",
            ADMIN,
            _ref("namespaces", "scratch", "scratch"),
            request_object=_delete_options(),
            response_object=_ns("scratch", "Terminating"),
        ),
        _event(
            "deletecollection",
            "/api/v1/namespaces/scratch/pods",
            CONTROLLER,
            _ref("pods", namespace="scratch"),
            request_object=_delete_options(),
        ),
        _event(
            "get",
            "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef",
            ADMIN,
            _ref("secrets", "bootstrap-token-abcdef", "kube-system"),
        ),
        _event("get", "/healthz", ADMIN, None, level="Metadata"),
    ]


def _write_lines(path: Path, events: list[dict[str, Any]], noise: bool = True) -> Path:
    lines = [json.dumps(e) for e in events]
    if noise:
        lines.insert(3, "I1124 09:00:03.123456       1 trace.go:236] Trace[1]: not an audit event")
        lines.insert(5, json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _replay(
    capsys: pytest.CaptureFixture[str], *argv: str, families: guards.Registry | None = None
) -> tuple[int, dict[str, Any]]:
    code = cli.main(["replay", "--output", "json", *argv], families=families)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {"stderr": captured.err}


def test_replay_finds_the_agents_attacks_and_none_of_the_admins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _write_lines(tmp_path / "audit.log", session())
    code, payload = _replay(capsys, str(log))
    assert code == 1
    summary = payload["summary"]
    assert summary["events"] == 10  # 11 event lines, the prod deletion's two stages count once
    assert summary["skipped"] == {"earlierStages": 1, "notJson": 1, "notAuditEvents": 1}
    assert summary["agentRequests"] == 6
    # the two namespace deletions, and the exec into web-0 (it reaches the container's Secrets)
    assert summary["wouldDeny"] == 3 and summary["byGuard"] == {"namespace-delete": 2, "secret-access": 1}
    assert summary["byAgent"] == {AGENT["username"]: 3}
    denied = {r["target"]: r for r in payload["requests"]}
    assert set(denied) == {"namespaces prod", "namespaces kube-system", "pods/exec default/web-0"}
    assert all(r["user"] == AGENT["username"] for r in payload["requests"])
    prod, kube_system = denied["namespaces prod"], denied["namespaces kube-system"]
    assert prod["partial"] == [] and prod["code"] == 200 and prod["verb"] == "delete"
    # the authorizer answers first (so `kubectl auth can-i` agrees), and admission would deny too
    assert [check["endpoint"] for check in prod["checks"]] == ["authorize", "validate"]
    assert prod["checks"][0]["findings"][0]["message"].startswith(
        '[namespace-delete] "delete" on namespace "prod"'
    )
    assert prod["checks"][1]["request"] == "DELETE namespaces prod"
    assert prod["checks"][1]["findings"][0]["message"].startswith(
        '[namespace-delete] deleting namespace "prod"'
    )
    assert kube_system["partial"] == ["the deleted object is not in the event: judged on its name"]
    assert kube_system["code"] == 403


def test_text_output_groups_by_guard_and_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _write_lines(tmp_path / "audit.log", session())
    assert cli.main(["replay", str(log)]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith(
        "replayed 10 request(s) from 1 file(s): 6 by agents, 3 would be denied "
        "(1 judged on partial information), 0 let through by exemptions"
    )
    assert "would be denied, by guard:\n  namespace-delete  2" in out
    assert f"would be denied, by agent:\n  {AGENT['username']}  3" in out
    assert "delete namespaces prod  (HTTP 200," in out
    assert "    partial: the deleted object is not in the event: judged on its name" in out
    assert "kubernetes-admin" not in out and "scratch" not in out
    assert f"warning: {log}: line 4: not JSON (1 such line(s) skipped)" in captured.err


def test_gzip_event_list_and_pretty_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event_list = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": session()}
    compressed = tmp_path / "audit.json.gz"
    compressed.write_bytes(gzip.compress(json.dumps(event_list).encode()))
    code, payload = _replay(capsys, str(compressed))
    assert code == 1 and payload["summary"]["wouldDeny"] == 3 and payload["summary"]["events"] == 10
    pretty = tmp_path / "audit-pretty.json"
    pretty.write_text(json.dumps(event_list, indent=2))
    code, payload = _replay(capsys, str(pretty))
    assert code == 1 and payload["summary"]["wouldDeny"] == 3
    assert payload["requests"][0]["source"].startswith(f"{pretty}:items[")


def test_only_admin_traffic_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin_only = [e for e in session() if e["user"] is not AGENT]
    code, payload = _replay(capsys, str(_write_lines(tmp_path / "admin.log", admin_only, noise=False)))
    assert code == 0
    assert payload["summary"]["agentRequests"] == 0 and payload["requests"] == []


def test_request_without_a_final_stage_counts_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = _ref("namespaces", "shop", "shop")
    events = [
        _event("delete", "/api/v1/namespaces/shop", AGENT, ref, stage="RequestReceived", audit_id="a-1"),
        _event("delete", "/api/v1/namespaces/shop", AGENT, ref, stage="ResponseStarted", audit_id="a-1"),
    ]
    code, payload = _replay(capsys, str(_write_lines(tmp_path / "a.log", events, noise=False)))
    assert code == 1
    assert payload["summary"]["events"] == 1 and payload["summary"]["skipped"]["earlierStages"] == 1


def test_exemptions_apply_in_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "policy.yaml").write_text((reviews.RULES / "policy.yaml").read_text())
    (rules / "exemptions.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nexemptions:\n"
        "  - {guard: namespace-delete, serviceAccount: mcp-system/mcp-k8s-go, namespace: prod,"
        " reason: decommissioning prod (CHG-7), expires: 2999-01-01}\n"
    )
    log = _write_lines(tmp_path / "audit.log", session())
    code, payload = _replay(capsys, "--rules", str(rules), str(log))
    assert code == 1
    assert payload["summary"]["wouldDeny"] == 2 and payload["summary"]["exempted"] == 1  # kube-system, exec
    exempted = next(r for r in payload["requests"] if not r["wouldDeny"])
    assert exempted["target"] == "namespaces prod"
    assert exempted["checks"][0]["exempted"][0]["ref"] == "exemptions.yaml#exemptions[0]"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "no audit events found"),
        ("just some text\nmore text\n", "no audit events found"),
        ('{"kind": "EventList", "items": [\n', "neither JSON lines nor a JSON EventList"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    path = tmp_path / "audit.log"
    path.write_text(content)
    assert cli.main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert cli.main(["replay", str(tmp_path / "missing.log")]) == 2
    assert "missing.log: no such file or directory" in capsys.readouterr().err


def _checks(payload: dict[str, Any], target: str) -> dict[str, list[str]]:
    [request] = [r for r in payload["requests"] if r["target"] == target]
    return {c["request"]: [f["message"] for f in c["findings"]] for c in request["checks"]}


def test_requests_are_built_like_the_apiserver_builds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the ``probe`` family every built request shows up as a finding naming its coordinates."""
    events = [
        _event("get", "/api/v1/namespaces/probe-a/secrets/db", AGENT, _ref("secrets", "db", "probe-a")),
        _event(
            "create",
            "/api/v1/namespaces/probe-a/pods/web/exec?command=cat&command=%2Fetc%2Fshadow&container=app&stdin=true&tty=true",
            AGENT,
            _ref("pods", "web", "probe-a", subresource="exec"),
            code=101,
        ),
        _event(
            "get",
            "/api/v1/namespaces/probe-a/pods/api/exec?command=sh&container=main",
            AGENT,
            _ref("pods", "api", "probe-a", subresource="exec"),
            code=101,
        ),
        _event(
            "patch",
            "/apis/apps/v1/namespaces/probe-a/deployments/web",
            AGENT,
            _ref("deployments", "web", "probe-a", group="apps"),
            request_object={"spec": {"template": {"spec": {"hostPID": True}}}},
        ),
        _event(
            "create",
            "/api/v1/namespaces/probe-a/pods",
            AGENT,
            _ref("pods", "job-1", "probe-a"),
            code=201,
            request_object={
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {"name": "job-1"},
                "spec": {"containers": []},
            },
        ),
        _event(
            "create",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/probe-a/rolebindings",
            AGENT,
            _ref("rolebindings", "grant", "probe-a", group="rbac.authorization.k8s.io"),
            code=201,
            request_object={
                "kind": "RoleBinding",
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": {"name": "grant", "namespace": "probe-a"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe-role"},
                "subjects": [{"kind": "ServiceAccount", "name": "mcp-k8s-go", "namespace": "mcp-system"}],
            },
        ),
        _event(
            "delete",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/probe-guard",
            AGENT,
            _ref("validatingwebhookconfigurations", "probe-guard", group="admissionregistration.k8s.io"),
        ),
        _event(
            "get",
            "/api/v1/namespaces/probe-b/secrets/token",
            AGENT,
            _ref("secrets", "token", "probe-b"),
            impersonated={
                "username": "system:serviceaccount:probe-b:deployer",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:probe-b",
                    "system:authenticated",
                ],
            },
        ),
    ]
    rules = probe.only_probe_rules(tmp_path / "rules")
    log = _write_lines(tmp_path / "probe.log", events, noise=False)
    code, payload = _replay(capsys, "--rules", str(rules), str(log), families=probe.registry())
    assert code == 1
    assert _checks(payload, "secrets probe-a/db") == {
        "get secrets probe-a/db": ["[probe] saw get /secrets probe-a/db"]
    }
    exec_checks = _checks(payload, "pods/exec probe-a/web")
    assert exec_checks["create pods/exec probe-a/web"] == ["[probe] saw create /pods/exec probe-a/web"]
    assert exec_checks["CONNECT pods/exec probe-a/web"] == [
        "[probe] saw CONNECT pods/exec probe-a/web kind=PodExecOptions object-kind=PodExecOptions "
        "command=['cat', '/etc/shadow'] container=app"
    ]
    assert "CONNECT pods/exec probe-a/api" in _checks(
        payload, "pods/exec probe-a/api"
    )  # exec over websocket: get
    patch = next(r for r in payload["requests"] if r["target"] == "deployments probe-a/web")
    assert patch["partial"] == [
        "patch: the event holds the patch, not the patched object",
        "no old object in the audit log: checks comparing old and new see none",
    ]
    created = _checks(payload, "pods probe-a/job-1")
    assert created == {
        "create pods probe-a": ["[probe] saw create /pods probe-a/"],  # authorized on the collection
        "CREATE pods probe-a/job-1": ["[probe] saw CREATE pods probe-a/job-1 kind=Pod object-kind=Pod"],
    }
    binding = _checks(payload, "rolebindings probe-a/grant")
    assert binding["bind roles probe-a/probe-role (derived: RBAC asks this on role/binding writes)"] == [
        "[probe] saw bind rbac.authorization.k8s.io/roles probe-a/probe-role"
    ]
    webhook_config = _checks(payload, "validatingwebhookconfigurations probe-guard")
    assert list(webhook_config) == ["delete validatingwebhookconfigurations probe-guard"]  # authorizer only
    impersonating = next(r for r in payload["requests"] if r["target"] == "secrets probe-b/token")
    assert (
        impersonating["user"]
        == f"system:serviceaccount:probe-b:deployer (impersonated by {AGENT['username']})"
    )
    assert [c["request"] for c in impersonating["checks"]] == [
        f"impersonate serviceaccounts probe-b/deployer (derived: impersonation by {AGENT['username']})"
    ]


def test_budgets_count_in_the_time_of_the_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A burst of deletes exceeds the budget at the third; the same deletes spread out would not."""
    rules = tmp_path / "rules"
    rules.mkdir()
    text = (reviews.RULES / "policy.yaml").read_text()
    (rules / "policy.yaml").write_text(
        text.replace("limit: 20", "limit: 2").replace("window: 10m", "window: 1m")
    )

    def delete(name: str, at: str) -> dict[str, Any]:
        event = _event(
            "delete",
            f"/api/v1/namespaces/shop/configmaps/{name}",
            AGENT,
            _ref("configmaps", name, "shop"),
            request_object=_delete_options(),
        )
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = at
        return event

    burst = [delete(f"cm-{i}", f"2026-11-24T10:00:{i:02d}.000000Z") for i in range(3)]
    code, payload = _replay(
        capsys, "--rules", str(rules), str(_write_lines(tmp_path / "burst.log", burst, False))
    )
    assert code == 1 and payload["summary"]["byGuard"] == {"delete-budget": 1}
    [refused] = payload["requests"]
    assert refused["target"] == "configmaps shop/cm-2"
    assert "refills by one at 10:01:00 UTC" in refused["checks"][0]["findings"][0]["message"]
    spread = [delete(f"cm-{i}", f"2026-11-24T10:0{2 * i}:00.000000Z") for i in range(3)]
    code, payload = _replay(
        capsys, "--rules", str(rules), str(_write_lines(tmp_path / "spread.log", spread, False))
    )
    assert code == 0 and payload["summary"]["wouldDeny"] == 0
