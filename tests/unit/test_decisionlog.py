"""The decision writer: one whole JSON line per decision, even from several threads at once."""

from __future__ import annotations

import datetime
import io
import json
import re
import threading

from webhook import decisionlog


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
