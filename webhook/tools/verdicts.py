"""Verdicts as the tools show them: one JSON shape and one text shape for check and replay.

"Would deny" in the tools means *any* finding, enforce or dry-run: the tools answer "what will
this policy refuse once it is enforced", and a dry-run guard is one you are about to enforce.
Each finding still carries its mode, so nobody mistakes a warning for a denial.
"""

from __future__ import annotations

from typing import Any

from webhook import decisionlog, engine
from webhook.tools import command

LABELS = {"deny": "DENY", "would-deny": "WOULD-DENY", "allow": "ALLOW"}
EXIT_CLEAN, EXIT_WOULD_DENY, EXIT_BAD_INPUT = command.EXIT_OK, 1, command.EXIT_BAD_INPUT


def would_deny(verdict: engine.Verdict) -> bool:
    return bool(verdict.findings)


def as_json(verdict: engine.Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {
        "agent": verdict.agent,
        "decision": verdict.decision,
        "findings": [{"guard": f.guard, "mode": f.mode, "message": f.message} for f in verdict.findings],
        **decisionlog.exemption_fields(verdict),
    }
    return out


def as_text(verdict: engine.Verdict, indent: str = "    ") -> list[str]:
    """The finding lines under an object or request (empty when there is nothing to say)."""
    out = []
    for finding in verdict.findings:
        suffix = "  (dry-run: allowed with a warning today)" if finding.mode == "dry-run" else ""
        out.append(f"{indent}{finding.message}{suffix}")
    for item in verdict.exempted:
        out.append(f"{indent}exempted: {item.finding.message}")
        out.append(f"{indent}  by {item.exemption.ref}: {item.exemption.reason}")
    for lapsed in verdict.expired:
        expiry = lapsed.expires.isoformat() if lapsed.expires else "?"
        out.append(f"{indent}note: exemption {lapsed.ref} matches but expired on {expiry}")
    return out
