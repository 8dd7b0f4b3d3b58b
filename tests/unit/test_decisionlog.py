"""The decision writer: one whole JSON line per decision, even from several threads at once."""

from __future__ import annotations

import datetime
import io
import json
import re
import threading

from webhook import attributes, decisionlog, engine


def test_each_decision_is_one_json_line_even_under_concurrency() -> None:
    sink = io.BytesIO()
    writer = decisionlog.Writer(sink)
    entries: list[dict[str, object]] = [
        {"uid": f"{t}-{i}", "messages": ["[x] " + "y" * 500]} for t in range(4) for i in range(250)
    ]

    def emit(part: list[dict[str, object]]) -> None:
        for entry in part:
            writer(entry)

    threads = [threading.Thread(target=emit, args=(entries[t::4],)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = sink.getvalue().decode().splitlines()
    assert len(lines) == len(entries)
    assert sorted(json.loads(line)["uid"] for line in lines) == sorted(str(e["uid"]) for e in entries)


def test_non_ascii_is_kept_as_utf8() -> None:
    sink = io.BytesIO()
    decisionlog.Writer(sink)({"name": "prüfung"})
    assert sink.getvalue() == '{"name":"prüfung"}\n'.encode()


def test_time_is_utc_iso_8601_with_milliseconds() -> None:
    before = datetime.datetime.now(datetime.UTC)
    stamp = decisionlog._now()
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after


def _access(verb: str, resource: str, group: str = "rbac.authorization.k8s.io") -> dict[str, object]:
    request = attributes.AccessRequest(
        user=attributes.UserInfo("system:serviceaccount:mcp-system:bot"),
        verb=verb,
        group=group,
        resource=resource,
    )
    finding = engine.Finding("rbac-escalation", "[rbac-escalation] no", "enforce")
    return decisionlog.access_entry(request, engine.Verdict(agent=True, findings=(finding,)), "enforce")


def test_rbac_prechecks_are_logged_as_not_final() -> None:
    """RBAC asks escalate/bind while storing a role or binding and falls back to its coverage check: the
    log must not read as a refused request when the write may have succeeded."""
    for verb, resource in (("escalate", "clusterroles"), ("bind", "roles")):
        entry = _access(verb, resource)
        assert entry["decision"] == "deny" and entry["final"] is False, entry
        assert "fall back" in str(entry["note"]), entry
    for entry in (
        _access("impersonate", "users", group=""),
        _access("escalate", "clusterroles", group="x.io"),
    ):
        assert "final" not in entry and "note" not in entry, entry
