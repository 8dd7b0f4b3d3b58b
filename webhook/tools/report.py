"""``agent-guard report``: what a running guard denied (or would have), summarized.

Input is the decision log (``webhook.decisionlog``: one JSON object per line). The server's stdout
may interleave other output, so lines that are not JSON decision entries are skipped and counted,
never fatal. An entry that names several guards counts once for each of them (the log records one
mode per request, not per guard). Output is a plain table by default, ``--output markdown`` for a
ticket or pull request, ``--output json`` for machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.tools import inputs, verdicts

DENIALS = ("deny", "would-deny")
CLUSTER = "(cluster-scoped)"


@dataclass(slots=True)
class Tally:
    """Counts for one key (a guard, an agent, a namespace) with first and last time seen."""

    deny: int = 0
    would_deny: int = 0
    first: str = ""
    last: str = ""
    _first_at: datetime.datetime | None = None
    _last_at: datetime.datetime | None = None

    def add(self, decision: str, time: str, at: datetime.datetime | None) -> None:
        if decision == "deny":
            self.deny += 1
        elif decision == "would-deny":
            self.would_deny += 1
        self.seen(time, at)

    def seen(self, time: str, at: datetime.datetime | None) -> None:
        if at is not None:
            if self._first_at is None or at < self._first_at:
                self._first_at, self.first = at, time
            if self._last_at is None or at > self._last_at:
                self._last_at, self.last = at, time

    def as_json(self) -> dict[str, Any]:
        return {
            "deny": self.deny,
            "wouldDeny": self.would_deny,
            "firstSeen": self.first,
            "lastSeen": self.last,
        }


@dataclass(slots=True)
class Summary:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    skipped_not_json: int = 0
    skipped_not_decision: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    span: Tally = field(default_factory=Tally)  # first/last time of any decision
    by_guard: dict[str, Tally] = field(default_factory=dict)
    by_agent: dict[str, Tally] = field(default_factory=dict)
    by_namespace: dict[str, Tally] = field(default_factory=dict)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    exemptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    expired: Counter[str] = field(default_factory=Counter)

    @property
    def entries(self) -> int:
        return sum(self.decisions.values())


def _time(entry: Mapping[str, Any]) -> tuple[str, datetime.datetime | None]:
    raw = entry.get("time")
    if not isinstance(raw, str):
        return "", None
    try:
        at = datetime.datetime.fromisoformat(raw)
    except ValueError:
        return raw, None
    return raw, at if at.tzinfo else at.replace(tzinfo=datetime.UTC)


def _is_decision(value: Any) -> bool:
    return isinstance(value, dict) and value.get("decision") in ("allow", *DENIALS)


def add(summary: Summary, entry: Mapping[str, Any]) -> None:
    decision = str(entry["decision"])
    summary.decisions[decision] += 1
    time, at = _time(entry)
    summary.span.seen(time, at)
    for item in entry.get("exempted") or ():
        if isinstance(item, dict):
            ref = str(item.get("ref", "?"))
            seen = summary.exemptions.setdefault(
                ref, {"guard": item.get("guard", ""), "reason": item.get("reason", ""), "uses": 0}
            )
            seen["uses"] += 1
    for item in entry.get("expiredExemptions") or ():
        if isinstance(item, dict):
            summary.expired[str(item.get("ref", "?"))] += 1
    if decision not in DENIALS:
        return
    summary.by_endpoint[str(entry.get("endpoint", "?"))] += 1
    guards = [str(g) for g in entry.get("guards") or ()] or ["(none recorded)"]
    for guard in guards:
        summary.by_guard.setdefault(guard, Tally()).add(decision, time, at)
    summary.by_agent.setdefault(str(entry.get("user", "?")), Tally()).add(decision, time, at)
    namespace = str(entry.get("namespace") or "") or CLUSTER
    summary.by_namespace.setdefault(namespace, Tally()).add(decision, time, at)
    summary.messages.update(str(m) for m in entry.get("messages") or ())


def summarize(names: Sequence[str]) -> Summary:
    summary = Summary(files=[inputs.display(n) for n in names])
    for name in names:
        for line in inputs.lines(name):
            text = line.strip()
            if not text:
                continue
            summary.lines += 1
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                summary.skipped_not_json += 1
                continue
            if not _is_decision(value):
                summary.skipped_not_decision += 1
                continue
            add(summary, value)
    return summary


# --- output --------------------------------------------------------------------------------------

Table = tuple[str, list[str], list[list[str]]]


def _ranked(tallies: Mapping[str, Tally]) -> list[tuple[str, Tally]]:
    return sorted(tallies.items(), key=lambda kv: (-(kv[1].deny + kv[1].would_deny), kv[0]))


def tables(summary: Summary, top: int) -> list[Table]:
    head = ["deny", "would-deny", "first seen", "last seen"]
    out: list[Table] = [
        (
            "decisions",
            ["decision", "count"],
            [[d, str(summary.decisions.get(d, 0))] for d in ("deny", "would-deny", "allow")],
        )
    ]
    for title, key, tallies in (
        ("by guard", "guard", summary.by_guard),
        ("by agent", "agent", summary.by_agent),
        ("by namespace", "namespace", summary.by_namespace),
    ):
        rows = [[name, str(t.deny), str(t.would_deny), t.first, t.last] for name, t in _ranked(tallies)]
        out.append((title, [key, *head], rows))
    out.append(
        (
            f"top {top} messages",
            ["count", "message"],
            [[str(count), message] for message, count in summary.messages.most_common(top)],
        )
    )
    if summary.exemptions:
        rows = [
            [ref, str(info["uses"]), str(info["guard"]), str(info["reason"])]
            for ref, info in sorted(summary.exemptions.items())
        ]
        out.append(("exemptions used", ["exemption", "uses", "guard", "reason"], rows))
    if summary.expired:
        rows = [[ref, str(count)] for ref, count in sorted(summary.expired.items())]
        out.append(("expired exemptions that matched (findings stood)", ["exemption", "requests"], rows))
    return out


def _header(summary: Summary) -> str:
    span = f", {summary.span.first} .. {summary.span.last}" if summary.span.first else ""
    skipped = summary.skipped_not_json + summary.skipped_not_decision
    return (
        f"{summary.entries} decision(s) from {len(summary.files)} file(s){span}; "
        f"skipped {skipped} line(s) ({summary.skipped_not_json} not JSON, "
        f"{summary.skipped_not_decision} JSON but not a decision)"
    )


def render_text(summary: Summary, top: int) -> str:
    lines = [_header(summary)]
    for title, headers, rows in tables(summary, top):
        lines += ["", f"{title}:"]
        if not rows:
            lines.append("  (none)")
            continue
        widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
        for row in (headers, *rows):
            cells = [
                cell.rjust(width) if cell.isdigit() else cell.ljust(width)
                for cell, width in zip(row, widths, strict=True)
            ]
            lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ") or " "


def render_markdown(summary: Summary, top: int) -> str:
    lines = ["# agent-guard decision report", "", _header(summary)]
    for title, headers, rows in tables(summary, top):
        lines += ["", f"## {title[0].upper()}{title[1:]}", ""]
        if not rows:
            lines.append("_none_")
            continue
        lines.append("| " + " | ".join(headers) + " |")
        lines.append(
            "|"
            + "|".join(
                "---:" if h in ("count", "deny", "would-deny", "uses", "requests") else "---" for h in headers
            )
            + "|"
        )
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def as_json(summary: Summary, top: int) -> dict[str, Any]:
    def tallies(items: Mapping[str, Tally]) -> dict[str, Any]:
        return {name: t.as_json() for name, t in _ranked(items)}

    return {
        "files": summary.files,
        "lines": summary.lines,
        "skipped": {"notJson": summary.skipped_not_json, "notDecision": summary.skipped_not_decision},
        "decisions": {d: summary.decisions.get(d, 0) for d in ("deny", "would-deny", "allow")},
        "firstSeen": summary.span.first,
        "lastSeen": summary.span.last,
        "byEndpoint": dict(summary.by_endpoint),
        "byGuard": tallies(summary.by_guard),
        "byAgent": tallies(summary.by_agent),
        "byNamespace": tallies(summary.by_namespace),
        "topMessages": [{"message": m, "count": c} for m, c in summary.messages.most_common(top)],
        "exemptions": summary.exemptions,
        "expiredExemptions": dict(summary.expired),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs", nargs="+", metavar="DECISION_LOG", help="decision log files (.gz ok; - for stdin)"
    )
    parser.add_argument("--output", choices=["text", "json", "markdown"], default="text")
    parser.add_argument("--top", type=int, default=10, help="how many messages to list (default 10)")


def run(args: argparse.Namespace) -> int:
    summary = summarize(inputs.expand(args.logs, ("",)))
    if summary.lines and not summary.entries:  # like replay given something that is not an audit log
        raise inputs.InputError(
            f"no decision log entries in {', '.join(summary.files)} "
            f"({summary.skipped_not_json} non-JSON and {summary.skipped_not_decision} other JSON line(s)); "
            "report reads the guard's decision log (an audit log is read by agent-guard replay)"
        )
    if args.output == "json":
        print(json.dumps(as_json(summary, args.top), indent=2, ensure_ascii=False))
    elif args.output == "markdown":
        print(render_markdown(summary, args.top))
    else:
        print(render_text(summary, args.top))
    if summary.skipped_not_json or summary.skipped_not_decision:
        print(
            f"agent-guard report: skipped {summary.skipped_not_json} non-JSON and "
            f"{summary.skipped_not_decision} non-decision line(s)",
            file=sys.stderr,
        )
    return verdicts.EXIT_CLEAN
