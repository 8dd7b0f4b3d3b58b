"""``agent-guard report`` on decision logs with known content."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastapi.testclient
import pytest

from tests import reviews
from webhook import app, cli, engine, policy

AGENT = "system:serviceaccount:mcp-system:mcp-k8s-go"
BOT = "system:serviceaccount:mcp-system:k8s-mcp"


def _entry(
    time: str,
    decision: str,
    *,
    user: str = AGENT,
    namespace: str = "",
    guards: tuple[str, ...] = ("namespace-delete",),
    messages: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    denied = decision != "allow"
    return {
        "time": time,
        "endpoint": extra.pop("endpoint", "validate"),
        "uid": "u",
        "user": user,
        "operation": "DELETE",
        "resource": "namespaces",
        "group": "",
        "namespace": namespace,
        "name": namespace,
        "dryRun": False,
        "agent": True,
        "guards": list(guards) if denied else [],
        "mode": "enforce" if decision == "deny" else "dry-run",
        "decision": decision,
        "allowed": decision != "deny",
        "messages": list(messages if messages is not None else [f"[{g}] no" for g in guards])
        if denied
        else [],
        **extra,
    }


KNOWN = [
    _entry(
        "2026-11-24T08:00:00.000Z", "deny", namespace="prod", messages=['[namespace-delete] deleting "prod"']
    ),
    _entry(
        "2026-11-24T09:30:00.000Z", "deny", namespace="prod", messages=['[namespace-delete] deleting "prod"']
    ),
    _entry(
        "2026-11-24T07:15:00.000Z",
        "would-deny",
        user=BOT,
        namespace="shop",
        messages=['[namespace-delete] deleting "shop"'],
    ),
    _entry(
        "2026-11-24T10:00:00.000Z",
        "deny",
        user=BOT,
        namespace="",
        guards=("secret-access", "rbac-escalation"),
        messages=("[secret-access] reading Secrets", "[rbac-escalation] binding cluster-admin"),
        endpoint="authorize",
    ),
    _entry("2026-11-24T11:00:00.000Z", "allow"),
    _entry(
        "2026-11-24T11:05:00.000Z",
        "allow",
        namespace="preview-1",
        exempted=[
            {
                "ref": "policy.yaml#exemptions[0]",
                "guard": "namespace-delete",
                "reason": "preview bot",
                "message": "[namespace-delete] x",
            }
        ],
    ),
    _entry(
        "2026-11-24T11:06:00.000Z",
        "deny",
        namespace="preview-2",
        messages=['[namespace-delete] deleting "preview-2"'],
        expiredExemptions=[
            {"ref": "policy.yaml#exemptions[1]", "guard": "namespace-delete", "reason": "old"}
        ],
    ),
]


def _write(path: Path, entries: list[dict[str, Any]], noise: bool = True) -> Path:
    lines = [json.dumps(e, separators=(",", ":")) for e in entries]
    if noise:  # the server's stdout interleaves other output
        lines.insert(1, "INFO:     Started server process [4242]")
        lines.insert(4, '{"level": "info", "msg": "policy reloaded"}')
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def _json(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict[str, Any]:
    assert cli.main(["report", "--output", "json", *map(str, paths)]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_counts_by_guard_agent_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, _write(tmp_path / "decisions.log", KNOWN))
    assert report["lines"] == 9
    assert report["skipped"] == {"notJson": 1, "notDecision": 1}
    assert report["decisions"] == {"deny": 4, "would-deny": 1, "allow": 2}
    assert (
        report["firstSeen"] == "2026-11-24T07:15:00.000Z" and report["lastSeen"] == "2026-11-24T11:06:00.000Z"
    )
    assert report["byEndpoint"] == {"validate": 4, "authorize": 1}
    assert report["byGuard"] == {
        "namespace-delete": {
            "deny": 3,
            "wouldDeny": 1,
            "firstSeen": "2026-11-24T07:15:00.000Z",
            "lastSeen": "2026-11-24T11:06:00.000Z",
        },
        "rbac-escalation": {
            "deny": 1,
            "wouldDeny": 0,
            "firstSeen": "2026-11-24T10:00:00.000Z",
            "lastSeen": "2026-11-24T10:00:00.000Z",
        },
        "secret-access": {
            "deny": 1,
            "wouldDeny": 0,
            "firstSeen": "2026-11-24T10:00:00.000Z",
            "lastSeen": "2026-11-24T10:00:00.000Z",
        },
    }
    assert {k: (v["deny"], v["wouldDeny"]) for k, v in report["byAgent"].items()} == {
        AGENT: (3, 0),
        BOT: (1, 1),
    }
    assert list(report["byAgent"]) == [AGENT, BOT]
    assert {k: (v["deny"], v["wouldDeny"]) for k, v in report["byNamespace"].items()} == {
        "prod": (2, 0),
        "(cluster-scoped)": (1, 0),
        "preview-2": (1, 0),
        "shop": (0, 1),
    }
    assert report["topMessages"][0] == {"message": '[namespace-delete] deleting "prod"', "count": 2}
    assert len(report["topMessages"]) == 5
    assert report["exemptions"] == {
        "policy.yaml#exemptions[0]": {"guard": "namespace-delete", "reason": "preview bot", "uses": 1}
    }
    assert report["expiredExemptions"] == {"policy.yaml#exemptions[1]": 1}


def test_table_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _write(tmp_path / "decisions.log", KNOWN)
    assert cli.main(["report", str(log), "--top", "2"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.splitlines()[0] == (
        "7 decision(s) from 1 file(s), 2026-11-24T07:15:00.000Z .. 2026-11-24T11:06:00.000Z; "
        "skipped 2 line(s) (1 not JSON, 1 JSON but not a decision)"
    )
    assert "by guard:\n  guard             deny  would-deny  first seen                last seen" in out
    assert "  namespace-delete     3           1  2026-11-24T07:15:00.000Z  2026-11-24T11:06:00.000Z" in out
    assert 'top 2 messages:\n  count  message\n      2  [namespace-delete] deleting "prod"' in out
    assert "exemptions used:" in out and "expired exemptions that matched (findings stood):" in out
    assert "skipped 1 non-JSON and 1 non-decision line(s)" in captured.err

    assert cli.main(["report", "--output", "markdown", str(log)]) == 0
    markdown = capsys.readouterr().out
    assert (
        "## By agent\n\n| agent | deny | would-deny | first seen | last seen |\n|---|---:|---:|---|---|"
        in markdown
    )
    assert f"| {AGENT} | 3 | 0 | 2026-11-24T08:00:00.000Z | 2026-11-24T11:06:00.000Z |" in markdown


def test_several_files_gzip_and_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _write(tmp_path / "a.log", KNOWN[:3], noise=False)
    second = tmp_path / "b.log.gz"
    second.write_bytes(gzip.compress(_write(tmp_path / "b.log", KNOWN[3:], noise=False).read_bytes()))
    report = _json(capsys, first, second)
    assert report["decisions"] == {"deny": 4, "would-deny": 1, "allow": 2}
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert _json(capsys, empty)["decisions"] == {"deny": 0, "would-deny": 0, "allow": 0}
    assert cli.main(["report", str(tmp_path / "missing.log")]) == 2
    assert "missing.log: no such file or directory" in capsys.readouterr().err


def test_report_reads_what_the_server_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shipped_policy: policy.Policy
) -> None:
    """The decision lines come from the real app, so a format change on either side fails here."""
    entries: list[dict[str, Any]] = []
    judge = engine.Engine(shipped_policy.with_mode("dry-run"))
    with fastapi.testclient.TestClient(
        app.create_app(app.State(judge), on_decision=entries.append)
    ) as client:
        for name in ("prod", "prod", "staging"):
            client.post("/validate", content=reviews.body(reviews.namespace_delete(name)))
        client.post("/validate", content=reviews.body(reviews.namespace_delete("prod", user=reviews.ADMIN)))
    report = _json(capsys, _write(tmp_path / "server.log", entries))
    assert report["decisions"] == {"deny": 0, "would-deny": 3, "allow": 1}
    assert report["byGuard"]["namespace-delete"]["wouldDeny"] == 3
    assert {k: v["wouldDeny"] for k, v in report["byNamespace"].items()} == {"(cluster-scoped)": 3}
    assert (
        report["topMessages"][0]["count"] == 2 and 'namespace "prod"' in report["topMessages"][0]["message"]
    )
