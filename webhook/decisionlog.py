"""One JSON line per decision, for operators, ``agent-guard report`` and audit.

Only identities, coordinates, guard ids and our own messages are logged: never objects, never
Secret data. Decision lines go to stdout (``Writer``), diagnostics to stderr, so the two can be
routed apart.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

from webhook import attributes, engine


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _now() -> str:
    """UTC with milliseconds (``2026-11-24T08:49:39.302Z``); the seconds part is formatted once a second."""
    now = time.time()
    second = int(now)
    return f"{_second(second)}.{int((now - second) * 1000):03d}Z"


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


RBAC_GROUP = "rbac.authorization.k8s.io"
# While storing a Role/ClusterRole (``escalate``) or a binding (``bind``, on the role it references)
# RBAC asks the authorizer chain first; a denial there is not final, RBAC then checks that the caller
# already holds every permission granted, and admission judges the object itself.
RBAC_PRECHECKS = frozenset({"escalate", "bind"})
PRECHECK_NOTE = (
    "RBAC asks this while an agent creates or updates a Role, ClusterRole or binding; the denial only "
    "makes RBAC fall back to checking that the agent already holds every permission it grants, so the "
    "write may still succeed (admission judges its content)"
)


def is_rbac_precheck(request: attributes.AccessRequest) -> bool:
    """An ``escalate``/``bind`` check on a role: what RBAC asks before it stores a role or binding."""
    return (
        request.verb in RBAC_PRECHECKS
        and request.group == RBAC_GROUP
        and request.resource in ("roles", "clusterroles")
        and not request.sub_resource
    )


def access_entry(
    request: attributes.AccessRequest, verdict: engine.Verdict, global_mode: str
) -> dict[str, Any]:
    entry = _access_entry(request, verdict, global_mode)
    if verdict.findings and is_rbac_precheck(request):
        entry["final"] = False  # the log must not claim a refusal for a write that may succeed
        entry["note"] = PRECHECK_NOTE
    return entry


def _access_entry(
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


class Writer:
    """Decision lines straight to a binary stream: one JSON object and a newline each, flushed.

    The stdlib ``logging`` path (records, caller lookup, formatting) cost more than judging a
    typical request, and decision lines need none of it: they are data, always written, never
    filtered by ``--log-level``. Diagnostics keep using ``logging`` (``configure_diagnostics``).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # the reload thread may log too; lines must never interleave

    def __call__(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def configure_diagnostics(level: int = logging.INFO) -> None:
    """Diagnostics go to stderr with a time and level prefix (decision lines go to stdout)."""
    root = logging.getLogger()
    if not root.handlers:
        diagnostics = logging.StreamHandler(sys.stderr)
        diagnostics.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(diagnostics)
    root.setLevel(level)
