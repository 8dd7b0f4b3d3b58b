"""Read the apiserver's audit log: find the event of one request by its ``Audit-Id``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

WAIT_SECONDS = 10.0


def event(log: Path, audit_id: str, wait: float = WAIT_SECONDS) -> dict[str, Any]:
    """The ``ResponseComplete`` event of request ``audit_id`` (the response can beat the log line)."""
    if not audit_id:
        raise AssertionError("the response carried no Audit-Id header")
    deadline = time.monotonic() + wait
    while True:
        if log.exists():
            with log.open(errors="replace") as lines:
                for line in lines:
                    if audit_id not in line:
                        continue
                    found: dict[str, Any] = json.loads(line)
                    if found.get("auditID") == audit_id and found.get("stage") == "ResponseComplete":
                        return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no ResponseComplete audit event for {audit_id} in {log} after {wait:.0f}s")
        time.sleep(0.1)


def annotations_of(log: Path, audit_id: str, prefix: str) -> dict[str, str]:
    """The event's annotations whose keys start with ``prefix`` (e.g. our webhook's name + ``/``)."""
    found = event(log, audit_id).get("annotations", {})
    return {key: value for key, value in found.items() if key.startswith(prefix)}
