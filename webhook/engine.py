"""Judge one request against the policy: pure, synchronous, no HTTP and no cluster access.

The engine is built once per policy (identity matcher compiled, modes resolved, ``off`` families
dropped) so that a review is a few dictionary lookups plus the guards themselves. It owns the
cross-cutting rules so guards cannot get them wrong: the ``[guard-id]`` prefix, dry-run versus
enforce, failing closed when a guard crashes on an agent's request or meets an object it cannot read
(``webhook.guards.safe``: wrong JSON types, oversized lists), and the policy's exemptions
(a guard's findings on an exempted request are dropped from the decision but kept in
``Verdict.exempted``, so audits still see what was let through and why). Time enters only through
the injected ``today`` clock, so expiry is testable and evaluation stays a pure function of its inputs.
"""

from __future__ import annotations

import datetime
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from webhook import attributes, exemptions, guards, identity, policy
from webhook.guards import base, safe

log = logging.getLogger("agent-guard.engine")

ActiveMode = Literal["enforce", "dry-run"]
Decision = Literal["allow", "deny", "would-deny"]
R = TypeVar("R", attributes.AdmissionRequest, attributes.AccessRequest)


@dataclass(frozen=True, slots=True)
class Finding:
    guard: str
    message: str  # always starts with "[guard]"
    mode: ActiveMode
    error: bool = False


@dataclass(frozen=True, slots=True)
class Exempted:
    """A finding an exemption let through: not part of the decision, but logged and reported."""

    finding: Finding
    exemption: exemptions.Exemption


@dataclass(frozen=True, slots=True)
class Verdict:
    agent: bool
    findings: tuple[Finding, ...] = ()
    exempted: tuple[Exempted, ...] = ()
    expired: tuple[exemptions.Exemption, ...] = ()  # matched the request but lapsed: findings stand

    @property
    def allowed(self) -> bool:
        return not any(f.mode == "enforce" for f in self.findings)

    @property
    def denials(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.mode == "enforce")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.mode == "dry-run")

    @property
    def guards(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.guard for f in self.findings))

    @property
    def decision(self) -> Decision:
        if not self.allowed:
            return "deny"
        return "would-deny" if self.findings else "allow"


# Per guard and review: at most this many findings, each at most MAX_MESSAGE characters (a message
# may quote a value from the object). Keeps the answer and the decision line a few kilobytes.
MAX_FINDINGS = 20
MAX_MESSAGE = 1000
MORE_FINDINGS = (
    f"more findings than the {MAX_FINDINGS} listed; fix these and send the object again to see the rest"
)


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


NOT_AGENT = Verdict(agent=False)
AGENT_CLEAN = Verdict(agent=True)


def utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


@dataclass(frozen=True, slots=True)
class _Active:
    family: base.Family[Any]
    settings: base.GuardSettings
    mode: ActiveMode


class Engine:
    """A policy compiled for evaluation. Immutable; a policy reload builds a new Engine."""

    def __init__(self, compiled: policy.Policy, today: Callable[[], datetime.date] = utc_today) -> None:
        self.policy = compiled
        self.today = today
        self.exemptions = exemptions.Index(compiled.exemptions)
        self.is_agent = identity.Matcher(compiled.agents)
        self.context = base.Context(is_agent=self.is_agent, guard_namespace=compiled.guard_namespace)
        families = guards.by_id()
        active = []
        for guard_id, settings in compiled.guards.items():
            mode = compiled.mode_of(guard_id)
            if mode != "off":
                active.append(_Active(families[guard_id], settings, mode))
        self._admission = tuple((a, a.family.admission) for a in active if a.family.admission is not None)
        self._access = tuple((a, a.family.access) for a in active if a.family.access is not None)

    def exemption_status(self) -> list[tuple[str, str]]:
        """``(level, line)`` per exemption: active, expired or naming a non-agent (for logs and CLI)."""
        selector = self.policy.agents
        return exemptions.status_lines(
            self.policy.exemptions,
            self.today(),
            self.is_agent,
            by_group=bool(selector.groups),
            by_extra=bool(selector.extra),
        )

    def admit(self, request: attributes.AdmissionRequest) -> Verdict:
        """Judge an admission request (CREATE/UPDATE/DELETE/CONNECT)."""
        return self._judge(request, self._admission, request.uid)

    def authorize(self, request: attributes.AccessRequest) -> Verdict:
        """Judge an authorization request (SubjectAccessReview); findings mean 'denied'."""
        return self._judge(request, self._access, "")

    def _judge(
        self,
        request: R,
        checks: tuple[tuple[_Active, Callable[[R, Any, base.Context], Iterable[str]]], ...],
        uid: str,
    ) -> Verdict:
        if not self.is_agent(request.user):
            return NOT_AGENT
        findings: list[Finding] = []
        for active, check in checks:
            guard_id = active.family.id
            try:
                # A bounded number per guard: the answer, the log line and the work stay small
                # whatever the object (a pod with a thousand privileged containers).
                messages = list(
                    itertools.islice(check(request, active.settings, self.context), MAX_FINDINGS + 1)
                )
            except safe.Unreadable as exc:  # a wrong type or an oversized list: a finding, not a crash
                roots = (getattr(request, "object", None), getattr(request, "old_object", None))
                findings.append(Finding(guard_id, f"[{guard_id}] {exc.finding(*roots)}", active.mode))
                continue
            except Exception as exc:  # a crashing guard must deny, never let the request through
                log.exception("guard %s failed on request uid=%s", guard_id, uid)
                findings.append(
                    Finding(
                        guard_id,
                        f"[{guard_id}] internal error while checking this request ({type(exc).__name__}); "
                        "agent requests fail closed, ask an operator to read the guard's log",
                        active.mode,
                        error=True,
                    )
                )
                continue
            if len(messages) > MAX_FINDINGS:
                messages[MAX_FINDINGS:] = [MORE_FINDINGS]
            findings.extend(Finding(guard_id, f"[{guard_id}] {_short(m)}", active.mode) for m in messages)
        if not findings:
            return AGENT_CLEAN
        if self.exemptions:
            return self._exempt(request, findings)
        return Verdict(agent=True, findings=tuple(findings))

    def _exempt(self, request: R, findings: list[Finding]) -> Verdict:
        """Move the findings of exempted guards aside; note lapsed exemptions that would have applied."""
        namespace, name = exemptions.scope(request)
        today = self.today()
        matches: dict[str, exemptions.Match] = {}
        kept: list[Finding] = []
        exempted: list[Exempted] = []
        expired: dict[str, exemptions.Exemption] = {}
        for finding in findings:
            match = matches.get(finding.guard)
            if match is None:
                match = self.exemptions.lookup(finding.guard, request.user.username, namespace, name, today)
                matches[finding.guard] = match
            if match.active is not None:
                exempted.append(Exempted(finding, match.active))
                continue
            kept.append(finding)
            expired.update((item.ref, item) for item in match.expired)
        return Verdict(
            agent=True, findings=tuple(kept), exempted=tuple(exempted), expired=tuple(expired.values())
        )
