"""One JSON line per decision, for operators, ``agent-guard report`` and audit.

Only identities, coordinates, guard ids and our own messages are logged: never objects, never
Secret data. The log goes to its own logger (``agent-guard.decision``) so it can be routed apart
from diagnostics.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

from webhook import attributes, engine

LOGGER_NAME = "agent-guard.decision"
log = logging.getLogger(LOGGER_NAME)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def effective_mode(verdict: engine.Verdict, global_mode: str) -> str:
    if verdict.denials:
        return "enforce"
    if verdict.warnings:
        return "dry-run"
    return global_mode


def _entry(verdict: engine.Verdict, global_mode: str, **coordinates: Any) -> dict[str, Any]:
    entry = {
        "time": _now(),
        **coordinates,
        "agent": verdict.agent,
        "guards": list(verdict.guards),
        "mode": effective_mode(verdict, global_mode),
        "decision": verdict.decision,
        "allowed": verdict.allowed,
        "messages": [f.message for f in verdict.findings],
    }
    entry.update(exemption_fields(verdict))
    return entry


def exemption_fields(verdict: engine.Verdict) -> dict[str, Any]:
    """``exempted`` / ``expiredExemptions``, only when present so the common line stays short."""
    fields: dict[str, Any] = {}
    if verdict.exempted:
        fields["exempted"] = [
            {**item.exemption.as_log(), "message": item.finding.message} for item in verdict.exempted
        ]
    if verdict.expired:
        fields["expiredExemptions"] = [item.as_log() for item in verdict.expired]
    return fields


def admission_entry(
    request: attributes.AdmissionRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    return _entry(
        verdict,
        global_mode,
        endpoint="validate",
        uid=request.uid,
        user=request.user.username,
        operation=request.operation,
        resource=request.resource_path,
        group=request.resource.group,
        namespace=request.namespace,
        name=request.name,
        dryRun=request.dry_run,
    )


def access_entry(
    request: attributes.AccessRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    return _entry(
        verdict,
        global_mode,
        endpoint="authorize",
        uid="",
        user=request.user.username,
        operation=request.verb,
        resource=request.resource_path or request.path,
        group=request.group,
        namespace=request.namespace,
        name=request.name,
        dryRun=False,
    )


def write(entry: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(orjson.dumps(entry).decode())


def configure(stream: Any = None, level: int = logging.INFO) -> None:
    """Decision lines go bare to stdout; diagnostics go to stderr with a level prefix."""
    decisions = logging.getLogger(LOGGER_NAME)
    decisions.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    decisions.addHandler(handler)
    decisions.setLevel(level)
    decisions.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        diagnostics = logging.StreamHandler(sys.stderr)
        diagnostics.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(diagnostics)
    root.setLevel(logging.INFO)
