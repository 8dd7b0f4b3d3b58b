"""Exemptions: exact matches only, expiry by the injected clock, never granted by the object itself."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

import fastapi.testclient
import pytest

from tests import probe, reviews
from webhook import app, attributes, cli, decisionlog, engine, policy, review, server

HEADER = "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
AGENTS = "agents:\n  serviceAccounts: ['mcp-system/*']\n"
OTHER_AGENT = {**reviews.AGENT, "username": "system:serviceaccount:mcp-system:other-agent"}
TODAY = datetime.date(2026, 11, 24)

PREVIEW = """
exemptions:
  - guard: namespace-delete
    serviceAccount: mcp-system/mcp-k8s-go
    namespace: preview-1234
    name: preview-1234
    reason: the preview bot tears down its own preview namespace (OPS-42, approved by J. Doe)
    expires: 2026-12-31
"""


def _policy(tmp_path: Path, body: str, name: str = "policy.yaml") -> policy.Policy:
    """The policy, loaded with the ``probe`` family registered next to the shipped ones."""
    path = tmp_path / name
    path.write_text(HEADER + AGENTS + body)
    return policy.load(path, families=probe.registry())


def _engine(loaded: policy.Policy, today: datetime.date = TODAY) -> engine.Engine:
    return engine.Engine(loaded, today=lambda: today)


def _delete(name: str, user: dict[str, Any] | None = None, **metadata: Any) -> attributes.AdmissionRequest:
    payload = reviews.namespace_delete(name, user=user)
    payload["request"]["oldObject"]["metadata"].update(metadata)
    return review.parse_admission(reviews.body(payload))


def _configmap(namespace: str, name: str, operation: str = "CREATE") -> attributes.AdmissionRequest:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
    request = reviews.admission_request(operation, "configmaps", name=name, namespace=namespace, obj=obj)
    return review.parse_admission(reviews.body(reviews.review(request)))


def test_exact_match_exempts_and_records(tmp_path: Path) -> None:
    judge = _engine(_policy(tmp_path, PREVIEW))
    verdict = judge.admit(_delete("preview-1234"))
    assert verdict.allowed and verdict.decision == "allow" and not verdict.findings
    [exempted] = verdict.exempted
    assert exempted.finding.guard == "namespace-delete"
    assert exempted.exemption.ref == "policy.yaml#exemptions[0]"
    entry = decisionlog.admission_entry(_delete("preview-1234"), verdict, "enforce")
    assert entry["decision"] == "allow"
    assert entry["exempted"] == [
        {
            "ref": "policy.yaml#exemptions[0]",
            "guard": "namespace-delete",
            "reason": "the preview bot tears down its own preview namespace (OPS-42, approved by J. Doe)",
            "expires": "2026-12-31",
            "message": exempted.finding.message,
        }
    ]
    answer = review.admission_response("uid-1", verdict)["response"]
    assert answer["allowed"] is True
    assert answer["auditAnnotations"] == {
        "decision": "allow",
        "guards": "",
        "exempted": "policy.yaml#exemptions[0]",
    }


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (lambda: _delete("preview-9999"), "other namespace"),
        (lambda: _delete("preview-1234", user=OTHER_AGENT), "other agent in the same namespace"),
    ],
)
def test_near_miss_does_not_exempt(tmp_path: Path, request_: Any, why: str) -> None:
    verdict = _engine(_policy(tmp_path, PREVIEW)).admit(request_())
    assert not verdict.allowed, why
    assert verdict.guards == ("namespace-delete",) and not verdict.exempted


def test_near_miss_other_guard_and_other_name(tmp_path: Path) -> None:
    loaded = _policy(
        tmp_path,
        """
exemptions:
  - {guard: probe, serviceAccount: mcp-system/mcp-k8s-go, namespace: preview-1234, reason: wrong guard}
  - {guard: probe, serviceAccount: mcp-system/mcp-k8s-go, namespace: probe-a, name: cm-1, reason: one object}
""",
    )
    judge = _engine(loaded)
    # An exemption for another guard leaves namespace-delete in force.
    verdict = judge.admit(_delete("preview-1234"))
    assert verdict.guards == ("namespace-delete",) and not verdict.allowed and not verdict.exempted
    # Exact name: cm-1 is exempted, cm-2 in the same namespace is not.
    assert judge.admit(_configmap("probe-a", "cm-1")).exempted
    other = judge.admit(_configmap("probe-a", "cm-2"))
    assert other.guards == ("probe",) and not other.allowed and not other.exempted


def test_without_name_the_whole_namespace_is_covered(tmp_path: Path) -> None:
    loaded = _policy(
        tmp_path,
        "exemptions:\n  - {guard: probe, username: system:serviceaccount:mcp-system:mcp-k8s-go,"
        " namespace: probe-a, reason: sandbox}\n",
    )
    judge = _engine(loaded)
    assert judge.admit(_configmap("probe-a", "anything")).allowed
    assert not judge.admit(_configmap("probe-b", "anything")).allowed


def test_authorize_honours_exemptions(tmp_path: Path) -> None:
    rules = probe.only_probe_rules(tmp_path / "rules")
    (rules / "exemptions.yaml").write_text(
        HEADER + "exemptions:\n  - {guard: probe, serviceAccount: mcp-system/mcp-k8s-go, namespace: probe-a,"
        " name: app-config, reason: reads its own config}\n"
    )
    loaded = policy.load(rules, families=probe.registry())
    judge = _engine(loaded)
    agent = attributes.UserInfo("system:serviceaccount:mcp-system:mcp-k8s-go")
    read = attributes.AccessRequest(agent, "get", resource="secrets", namespace="probe-a", name="app-config")
    verdict = judge.authorize(read)
    assert verdict.allowed and not verdict.findings and verdict.exempted[0].finding.guard == "probe"
    entry = decisionlog.access_entry(read, verdict, "enforce")
    assert entry["exempted"][0]["ref"] == "exemptions.yaml#exemptions[0]"
    other = attributes.AccessRequest(agent, "get", resource="secrets", namespace="probe-a", name="db")
    assert judge.authorize(other).findings


@pytest.mark.parametrize(
    ("today", "applies"),
    [
        (datetime.date(2026, 12, 30), True),
        (datetime.date(2026, 12, 31), True),  # the whole last day is covered
        (datetime.date(2027, 1, 1), False),
    ],
)
def test_expiry(tmp_path: Path, today: datetime.date, applies: bool) -> None:
    judge = _engine(_policy(tmp_path, PREVIEW), today)
    verdict = judge.admit(_delete("preview-1234"))
    assert verdict.allowed is applies
    assert bool(verdict.exempted) is applies
    if not applies:
        assert [e.ref for e in verdict.expired] == ["policy.yaml#exemptions[0]"]
        entry = decisionlog.admission_entry(_delete("preview-1234"), verdict, "enforce")
        assert entry["decision"] == "deny"
        assert entry["expiredExemptions"] == [
            {
                "ref": "policy.yaml#exemptions[0]",
                "guard": "namespace-delete",
                "reason": verdict.expired[0].reason,
                "expires": "2026-12-31",
            }
        ]


def test_clock_is_read_at_evaluation_time(tmp_path: Path) -> None:
    """A long-running server stops honouring an exemption the day after it expires, without reload."""
    days = iter([datetime.date(2026, 12, 31), datetime.date(2027, 1, 1)])
    judge = engine.Engine(_policy(tmp_path, PREVIEW), today=lambda: next(days))
    assert judge.admit(_delete("preview-1234")).allowed
    assert not judge.admit(_delete("preview-1234")).allowed


def test_object_labels_and_annotations_cannot_exempt(tmp_path: Path) -> None:
    judge = _engine(_policy(tmp_path, PREVIEW))
    verdict = judge.admit(
        _delete(
            "prod",
            labels={"agent-guard.io/exempt": "true", "agent-guard.io/exemption": "namespace-delete"},
            annotations={
                "agent-guard.io/exempt": "namespace-delete",
                "agent-guard.io/exemptions": json.dumps(
                    [{"guard": "namespace-delete", "namespace": "prod", "reason": "trust me"}]
                ),
                "agent-guard.io/reason": "approved",
            },
        )
    )
    assert not verdict.allowed and not verdict.exempted
    assert verdict.guards == ("namespace-delete",)


def test_non_agents_are_never_judged_so_exemptions_do_not_matter(tmp_path: Path) -> None:
    judge = _engine(_policy(tmp_path, PREVIEW))
    assert judge.admit(_delete("prod", user=reviews.ADMIN)) is engine.NOT_AGENT


SA = "guard: namespace-delete, serviceAccount: mcp-system/a"
GOOD = f"{SA}, namespace: x, reason: r"


@pytest.mark.parametrize(
    ("entry", "field", "problem"),
    [
        (f"{SA}, namespace: x", "exemptions.0.reason", "Field required"),
        (f"{SA}, namespace: x, reason: '  '", "exemptions.0.reason", "a reason is required"),
        (f"{SA}, reason: r", "exemptions.0.namespace", "Field required"),
        ("guard: namespace-delete, namespace: x, reason: r", "exemptions.0", "exactly one of username or"),
        (f"{GOOD}, username: u", "exemptions.0", "exactly one of username or serviceAccount"),
        (GOOD.replace("mcp-system/a", "'mcp-system/*'"), "exemptions.0.serviceAccount", "no wildcards"),
        (GOOD.replace("mcp-system/a", "mcp-system"), "exemptions.0.serviceAccount", "namespace/name"),
        (GOOD.replace("namespace-delete", "namespace-delet"), "exemptions.0.guard", "unknown guard id"),
        (f"{GOOD}, expires: 2026-12-01T10:00:00Z", "exemptions.0.expires", "expires is a date"),
        (f"{GOOD}, expires: soon", "exemptions.0.expires", "Input should be a valid date"),
        (f"{GOOD}, labels: {{a: b}}", "exemptions.0.labels", "unknown field"),
        # PyYAML parses dates itself; its error names the line instead of the field.
        (f"{GOOD}, expires: 2026-13-01", "line 6 column", "invalid YAML: invalid date '2026-13-01'"),
    ],
)
def test_bad_exemptions_name_file_and_field(tmp_path: Path, entry: str, field: str, problem: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        _policy(tmp_path, f"exemptions:\n  - {{{entry}}}\n")
    [line] = caught.value.problems
    assert line.startswith(f"{tmp_path / 'policy.yaml'}: {field}"), line
    assert problem in line, line


def test_exemptions_from_several_files_are_concatenated(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEADER + AGENTS + PREVIEW)
    (tmp_path / "b.yaml").write_text(
        HEADER
        + "exemptions:\n  - {guard: namespace-delete, username: alice-bot, namespace: scratch, reason: r}\n"
    )
    loaded = policy.load(tmp_path)
    assert [e.ref for e in loaded.exemptions] == ["a.yaml#exemptions[0]", "b.yaml#exemptions[0]"]
    assert loaded.exemptions[1].username == "alice-bot"
    assert loaded.exemptions[0].username == "system:serviceaccount:mcp-system:mcp-k8s-go"


STATUS = """
exemptions:
  - {guard: namespace-delete, serviceAccount: mcp-system/bot, namespace: a, reason: current,
     expires: 2999-12-31}
  - {guard: namespace-delete, serviceAccount: mcp-system/bot, namespace: b, reason: old, expires: 2020-01-01}
  - {guard: namespace-delete, serviceAccount: ci/deployer, namespace: c, reason: not an agent}
"""


def test_policy_command_reports_expired_exemptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.yaml").write_text(HEADER + AGENTS + STATUS)
    assert cli.main(["policy", "--rules", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "namespace-delete: enforce" in out
    assert "policy.yaml#exemptions[0]: namespace-delete for system:serviceaccount:mcp-system:bot in " in out
    assert "active, until 2999-12-31 (reason: current)" in out
    assert "WARNING policy.yaml#exemptions[1]" in out and "EXPIRED on 2020-01-01, no longer applies" in out
    assert "WARNING policy.yaml#exemptions[2]" in out and "is not an agent identity" in out


def test_server_logs_exemption_status_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "policy.yaml").write_text(HEADER + AGENTS + STATUS)
    with caplog.at_level(logging.INFO, logger="agent-guard.engine"):
        server.load_engine(server.Settings(rules=tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "EXPIRED on 2020-01-01" in warnings[0]
    assert any("active, until 2999-12-31" in r.getMessage() for r in caplog.records)


def test_validate_endpoint_honours_exemptions(tmp_path: Path) -> None:
    loaded = _policy(tmp_path, PREVIEW.replace("2026-12-31", "2999-12-31"))
    decisions: list[dict[str, Any]] = []
    with fastapi.testclient.TestClient(
        app.create_app(app.State(engine.Engine(loaded)), on_decision=decisions.append)
    ) as client:
        allowed = client.post("/validate", content=reviews.body(reviews.namespace_delete("preview-1234")))
        denied = client.post("/validate", content=reviews.body(reviews.namespace_delete("prod")))
    assert allowed.json()["response"]["allowed"] is True
    assert allowed.json()["response"]["auditAnnotations"]["exempted"] == "policy.yaml#exemptions[0]"
    assert denied.json()["response"]["allowed"] is False
    assert [d["decision"] for d in decisions] == ["allow", "deny"]
    assert decisions[0]["exempted"][0]["guard"] == "namespace-delete" and "exempted" not in decisions[1]
