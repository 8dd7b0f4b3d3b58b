"""``agent-guard replay``: run a Kubernetes audit log through the policy after the fact.

Identity-based rules can be audited backwards because the apiserver's audit log records *who* did
*what*. Each event (``webhook.tools.audit`` reads and translates them) is judged the way the live
guard would have judged it:

- every request -> ``Engine.authorize`` (the ``/authorize`` webhook sees every request, including
  reads - get/list/watch - that admission never sees);
- create/update/patch/delete/deletecollection and the connect subresources exec/attach/portforward/
  proxy (audit verb ``create`` or ``get``) -> ``Engine.admit`` (``/validate``);
- checks the apiserver makes inside a request: ``impersonate`` for an impersonating caller (the
  request itself is then judged as the impersonated user, as both webhooks see it), ``escalate``
  on Role/ClusterRole writes and ``bind`` on a binding's roleRef.

The admission-registration objects the apiserver never sends to webhooks are judged by the
authorizer only. Webhook routing (the rendered rules) is not modelled: every guard sees every
request, as in the fixture tests. What an event cannot tell is reported as *partial*.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook import engine
from webhook.tools import audit, command, inputs, verdicts


@dataclass(frozen=True, slots=True)
class Check:
    """One judgement made for an event: which endpoint, what was asked, what the engine said."""

    endpoint: str  # "validate" | "authorize"
    what: str  # e.g. "DELETE namespaces prod" or "impersonate users admin (derived)"
    verdict: engine.Verdict


@dataclass(slots=True)
class Judged:
    """One audit event (one API request) and every judgement made for it."""

    audit_id: str
    time: str
    source: str
    user: str
    verb: str
    target: str
    code: int | None
    checks: list[Check] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)

    @property
    def agent(self) -> bool:
        return any(c.verdict.agent for c in self.checks)

    @property
    def would_deny(self) -> bool:
        return any(verdicts.would_deny(c.verdict) for c in self.checks)

    @property
    def exempted(self) -> bool:
        return any(c.verdict.exempted for c in self.checks)

    def guards(self) -> list[str]:
        return list(dict.fromkeys(g for c in self.checks for g in c.verdict.guards))


def judge_event(judge: engine.Engine, source: str, event: Mapping[str, Any]) -> Judged:
    caller = audit.user_info(event["user"])
    impersonated = event.get("impersonatedUser")
    user = audit.user_info(impersonated) if isinstance(impersonated, dict) else caller
    ref = event.get("objectRef") if isinstance(event.get("objectRef"), dict) else None
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) and isinstance(status.get("code"), int) else None
    access = audit.access_request(event, ref, user)
    if ref is not None:
        resource = "/".join(str(ref[k]) for k in ("resource", "subresource") if ref.get(k))
        target = audit.describe("", resource, str(ref.get("namespace", "")), str(ref.get("name", "")))
    else:
        target = access.path
    judged = Judged(
        audit_id=str(event.get("auditID", "")),
        time=str(event.get("requestReceivedTimestamp") or event.get("stageTimestamp") or ""),
        source=source,
        user=user.username + (f" (impersonated by {caller.username})" if user is not caller else ""),
        verb=str(event["verb"]),
        target=target,
        code=code,
    )
    if isinstance(impersonated, dict):
        for derived in audit.impersonation_checks(caller, impersonated):
            what = f"{audit.describe_access(derived)} (derived: impersonation by {caller.username})"
            judged.checks.append(Check("authorize", what, judge.authorize(derived)))
    judged.checks.append(Check("authorize", audit.describe_access(access), judge.authorize(access)))
    if ref is not None:
        admission = audit.admission_request(event, ref, user, judged.partial)
        if admission is not None:
            what = audit.describe(
                admission.operation, admission.resource_path, admission.namespace, admission.name
            )
            judged.checks.append(Check("validate", what, judge.admit(admission)))
        for derived in audit.rbac_checks(event, ref, user):
            what = f"{audit.describe_access(derived)} (derived: RBAC asks this on role/binding writes)"
            judged.checks.append(Check("authorize", what, judge.authorize(derived)))
    return judged


class EventClock:
    """The engine's clock during a replay: the time each audit event was received.

    Destructive budgets then count in the cluster's time, so a replay says which delete of a burst
    the budget would have refused, not what would happen if all of them arrived now.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def follow(self, event: Mapping[str, Any]) -> None:
        stamp = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
        with contextlib.suppress(TypeError, ValueError):  # keep the last time for a malformed stamp
            self.now = datetime.datetime.fromisoformat(str(stamp)).timestamp()


def replay(
    judge: engine.Engine, names: Sequence[str], stats: audit.Stats, clock: EventClock | None = None
) -> list[Judged]:
    """Every agent request in the logs, judged (non-agent requests are counted, not kept)."""
    kept: list[Judged] = []
    for source, event in audit.unique_events(names, stats):
        if clock is not None:
            clock.follow(event)
        judged = judge_event(judge, source, event)
        if judged.agent:
            kept.append(judged)
    return kept


# --- output --------------------------------------------------------------------------------------


def _summary(judged: Sequence[Judged], stats: audit.Stats) -> dict[str, Any]:
    denied = [j for j in judged if j.would_deny]
    by_guard: Counter[str] = Counter(g for j in denied for g in j.guards())
    return {
        "events": stats.events,
        "agentRequests": len(judged),
        "wouldDeny": len(denied),
        "partial": sum(1 for j in denied if j.partial),
        "exempted": sum(1 for j in judged if j.exempted),
        "skipped": {
            "earlierStages": stats.duplicates,
            "notJson": stats.not_json,
            "notAuditEvents": stats.not_events,
        },
        "byGuard": dict(by_guard.most_common()),
        "byAgent": dict(Counter(j.user for j in denied).most_common()),
    }


def _judged_json(item: Judged) -> dict[str, Any]:
    return {
        "auditID": item.audit_id,
        "time": item.time,
        "source": item.source,
        "user": item.user,
        "verb": item.verb,
        "target": item.target,
        "code": item.code,
        "wouldDeny": item.would_deny,
        "partial": item.partial,
        "checks": [
            {"endpoint": c.endpoint, "request": c.what, **verdicts.as_json(c.verdict)}
            for c in item.checks
            if c.verdict.findings or c.verdict.exempted or c.verdict.expired
        ],
    }


def render_text(judged: Sequence[Judged], stats: audit.Stats, names: Sequence[str]) -> str:
    summary = _summary(judged, stats)
    skipped = summary["skipped"]
    lines = [
        f"replayed {summary['events']} request(s) from {len(names)} file(s): "
        f"{summary['agentRequests']} by agents, "
        f"{summary['wouldDeny']} would be denied ({summary['partial']} judged on partial information), "
        f"{summary['exempted']} let through by exemptions",
        f"skipped: {skipped['earlierStages']} earlier stage(s) of counted requests, "
        f"{skipped['notJson']} non-JSON line(s), {skipped['notAuditEvents']} non-audit object(s)",
    ]
    for title, counts in (("by guard", summary["byGuard"]), ("by agent", summary["byAgent"])):
        if counts:
            width = max(len(k) for k in counts)
            lines += ["", f"would be denied, {title}:"]
            lines += [f"  {key:<{width}}  {count}" for key, count in counts.items()]
    shown = [j for j in judged if j.would_deny or j.exempted]
    if shown:
        lines += ["", "requests:"]
    for guard in [*summary["byGuard"], None]:
        for item in shown:
            first = item.guards()[0] if item.guards() else None
            if first != guard:
                continue
            outcome = f"HTTP {item.code}" if item.code is not None else "no response recorded"
            label = "WOULD-DENY" if item.would_deny else "EXEMPTED"
            lines.append(
                f"{label:<10}  {item.time}  {item.user}  {item.verb} {item.target}"
                f"  ({outcome}, {item.source})"
            )
            for check in item.checks:
                if check.verdict.findings or check.verdict.exempted or check.verdict.expired:
                    lines.append(f"    {check.endpoint}: {check.what}")
                    lines.extend(verdicts.as_text(check.verdict, indent="      "))
            lines.extend(f"    partial: {reason}" for reason in item.partial)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="AUDIT_LOG",
        help="audit log files (JSON lines or EventList; .gz ok; - for stdin)",
    )
    command.add_rules(parser)
    parser.add_argument("--mode", choices=["enforce", "dry-run"], help="override the policy's modes")
    parser.add_argument("--output", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    clock = EventClock()
    judge = engine.Engine(command.load_policy(args, code=verdicts.EXIT_BAD_INPUT), clock=clock)
    stats = audit.Stats()
    names = inputs.expand(args.logs, ("",))
    judged = replay(judge, names, stats, clock)
    for problem in stats.problems:
        print(f"agent-guard replay: warning: {problem}", file=sys.stderr)
    if stats.events == 0:
        raise inputs.InputError(f"no audit events found in {', '.join(args.logs)}")
    if args.output == "json":
        payload = {
            "summary": _summary(judged, stats),
            "requests": [_judged_json(j) for j in judged if j.would_deny or j.exempted],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print(render_text(judged, stats, names))
    return verdicts.EXIT_WOULD_DENY if any(j.would_deny for j in judged) else verdicts.EXIT_CLEAN
