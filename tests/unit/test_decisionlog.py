"""The decision writer: one whole JSON line per decision, even from several threads at once."""

from __future__ import annotations

import datetime
import io
import json
import re
import sys
import threading
import time

import pytest

from webhook import attributes, decisionlog, engine, metrics


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
    assert writer.close()
    lines = sink.getvalue().decode().splitlines()
    assert len(lines) == len(entries)
    assert sorted(json.loads(line)["uid"] for line in lines) == sorted(str(e["uid"]) for e in entries)


def test_non_ascii_is_kept_as_utf8() -> None:
    sink = io.BytesIO()
    writer = decisionlog.Writer(sink)
    writer({"name": "prüfung"})
    assert writer.close()
    assert sink.getvalue() == '{"name":"prüfung"}\n'.encode()


def test_time_is_utc_iso_8601_with_milliseconds() -> None:
    before = datetime.datetime.now(datetime.UTC)
    stamp = decisionlog._now()
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after


class _Stalled(io.BytesIO):
    """A sink whose reader stopped reading: every write blocks until ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.release.wait()
        return super().write(data)


class _Failing(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.failing:
            raise OSError(28, "No space left on device")
        return super().write(data)


def _dropped(meters: metrics.Metrics, reason: str) -> float:
    value = meters.registry.get_sample_value(
        "agent_guard_decision_log_dropped_lines_total", {"reason": reason}
    )
    return value or 0.0


def test_a_stalled_reader_never_blocks_the_caller_and_overflow_is_counted() -> None:
    sink, meters = _Stalled(), metrics.Metrics()
    writer = decisionlog.Writer(sink, meters, capacity=100)
    started = time.monotonic()
    for index in range(1000):
        writer({"uid": str(index)})
    assert time.monotonic() - started < 2  # would hang forever if writing were synchronous
    dropped = _dropped(meters, "queue-full")
    assert 1000 - 100 - decisionlog.Writer.BATCH <= dropped <= 1000 - 100
    sink.release.set()
    assert writer.close()
    written = sink.getvalue().decode().splitlines()
    assert len(written) + dropped == 1000
    assert json.loads(written[0]) == {"uid": "0"}


def test_a_failing_sink_is_reported_counted_and_recovers() -> None:
    sink, meters = _Failing(), metrics.Metrics()
    writer = decisionlog.Writer(sink, meters)
    writer({"uid": "lost"})
    deadline = time.monotonic() + 5
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.error is not None and "No space left" in writer.error
    assert meters.registry.get_sample_value("agent_guard_decision_log_failing") == 1
    assert _dropped(meters, "write-error") == 1
    sink.failing = False
    writer({"uid": "kept"})
    assert writer.close()
    assert writer.error is None
    assert meters.registry.get_sample_value("agent_guard_decision_log_failing") == 0
    assert sink.getvalue() == b'{"uid":"kept"}\n'


def test_no_stdout_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OSError, match="stdout, which is closed"):
        decisionlog.stdout_stream()


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
