"""Judge one request against the policy: pure, synchronous, no HTTP and no cluster access.

The engine is built once per policy (identity matcher compiled, modes resolved, ``off`` families
dropped) so that a review is a few dictionary lookups plus the guards themselves. It owns the
cross-cutting rules so guards cannot get them wrong: the ``[guard-id]`` prefix, dry-run versus
enforce, failing closed when a guard crashes on an agent's request or meets an object it cannot read
(``webhook.safe``: wrong JSON types, oversized lists), and the policy's exemptions
(a guard's findings on an exempted request are dropped from the decision but kept in
``Verdict.exempted``, so audits still see what was let through and why). Time enters only through
the injected ``today`` clock, so expiry is testable and evaluation stays a pure function of its inputs.

Runtime state is injected too, never global, and outlives a policy reload (``successor``): the
destructive-budget ``budget.Ledger`` (read against the injected ``clock``, written only after the
decision: ``admit`` lets the families that ``settle`` record a request the verdict admitted, so a
refused request never spends anything) and the ``approvals.Store`` of human Approvals, which can
turn an approvable denial into one admission.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from webhook import approvals, attributes, budget, exemptions, identity, policy, safe
from webhook.guards import base

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
MAX_MESSAGE = 4096
MORE_FINDINGS = (
    f"more findings than the {MAX_FINDINGS} listed; fix these and send the object again to see the rest"
)


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


NOT_AGENT = Verdict(agent=False)
AGENT_CLEAN = Verdict(agent=True)
INTERNAL_ERROR = "internal-error"  # the pseudo guard id of a verdict the engine could not reach


def fail_closed(reason: str) -> Verdict:
    """The verdict when judging itself failed: deny, whatever the mode (only agents reach the guard)."""
    message = (
        f"[{INTERNAL_ERROR}] {reason}; agent requests fail closed, ask an operator to read the guard's log"
    )
    return Verdict(agent=True, findings=(Finding(INTERNAL_ERROR, message, "enforce", error=True),))


def utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


@dataclass(frozen=True, slots=True)
class _Active:
    family: base.Family[Any]
    settings: base.GuardSettings
    mode: ActiveMode


def _crashed(active: _Active, doing: str, exc: Exception) -> Finding:
    """The fail-closed finding for a guard that raised while ``doing`` ("checking") a request."""
    guard_id = active.family.id
    return Finding(
        guard_id,
        f"[{guard_id}] internal error while {doing} this request ({type(exc).__name__}); "
        "agent requests fail closed, ask an operator to read the guard's log",
        active.mode,
        error=True,
    )


class Engine:
    """A policy compiled for evaluation. Immutable (its state objects are not); a reload builds a new one."""

    def __init__(
        self,
        compiled: policy.Policy,
        today: Callable[[], datetime.date] = utc_today,
        *,
        ledger: budget.Ledger | None = None,
        clock: Callable[[], float] = time.time,
        approved: approvals.Store | None = None,
        rbac: base.RbacView | None = None,
    ) -> None:
        self.policy = compiled
        self.today = today
        self.clock = clock
        self.ledger = ledger if ledger is not None else budget.Ledger()
        self.approvals = approved if approved is not None else approvals.Store()
        self.rbac = rbac  # None: no RBAC source, the guards judge by names (see guards.base.Context)
        self.exemptions = exemptions.Index(compiled.exemptions)
        self.is_agent = identity.Matcher(compiled.agents)
        self.context = base.Context(
            is_agent=self.is_agent,
            guard_namespace=compiled.guard_namespace,
            pod_templates=compiled.pod_templates.table(),
            detect_pod_templates=compiled.pod_templates.detect,
            ledger=self.ledger,
            clock=clock,
            rbac=rbac,
        )
        families = compiled.families.by_id
        active = []
        for guard_id, settings in compiled.guards.items():
            mode = compiled.mode_of(guard_id)
            if mode != "off":
                active.append(_Active(families[guard_id], settings, mode))
        self._admission = tuple((a, a.family.admission) for a in active if a.family.admission is not None)
        self._access = tuple((a, a.family.access) for a in active if a.family.access is not None)
        self._settle = tuple((a, a.family.settle) for a in active if a.family.settle is not None)

    def successor(self, compiled: policy.Policy) -> Engine:
        """An engine for a reloaded policy that keeps this one's clocks and runtime state."""
        return Engine(
            compiled,
            self.today,
            ledger=self.ledger,
            clock=self.clock,
            approved=self.approvals,
            rbac=self.rbac,
        )

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
        """Judge an admission request (CREATE/UPDATE/DELETE/CONNECT), then settle it if admitted."""
        verdict = self._judge(request, self._admission, request.uid)
        if not verdict.allowed and self.policy.approvals:
            verdict = self._approval(request, verdict)
        if verdict.agent and verdict.allowed and self._settle:
            return self._settled(request, verdict)
        return verdict

    def _approval(self, request: attributes.AdmissionRequest, verdict: Verdict) -> Verdict:
        """Admit an approved retry once, or tell how a human can approve an approvable denial.

        Only when *every* enforced denial is approvable for this request (and none is a crash): an
        approval can never wave through a finding the policy did not make approvable.
        """
        denials = verdict.denials
        path = request.resource_path
        if any(f.error for f in denials) or not all(
            any(rule.covers(f.guard, request.namespace, path) for rule in self.policy.approvals)
            for f in denials
        ):
            return verdict
        store = self.approvals
        if not store.enabled:
            return verdict  # nobody watches Approvals: offering a command would be a lie
        target = approvals.Target.of(request)
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        approval = store.find(target, now)
        # A server-side dry run is judged with the approval but does not use it up.
        if approval is not None and (request.dry_run or store.take(approval)):
            granted = tuple(Exempted(f, approval.exemption(f.guard)) for f in denials)
            return dataclasses.replace(
                verdict, findings=verdict.warnings, exempted=(*verdict.exempted, *granted)
            )
        store.offered_total += 1
        last = denials[-1]
        offered = dataclasses.replace(
            last,
            message=f"{last.message}. Approval id {target.id}: if the user wants exactly this done, "
            "they (a human; agents are refused) can approve it once by running: "
            f"{target.command()} -- then retry the same request once",
        )
        return dataclasses.replace(
            verdict, findings=tuple(offered if f is last else f for f in verdict.findings)
        )

    def _settled(self, request: attributes.AdmissionRequest, verdict: Verdict) -> Verdict:
        """Let stateful families record an admitted request; if one cannot, fail closed like a crash."""
        errors: list[Finding] = []
        for active, settle in self._settle:
            try:
                settle(request, active.settings, self.context)
            except Exception as exc:
                log.exception("guard %s failed to record request uid=%s", active.family.id, request.uid)
                errors.append(_crashed(active, "recording", exc))
        if not errors:
            return verdict
        return dataclasses.replace(verdict, findings=(*verdict.findings, *errors))

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
                findings.append(_crashed(active, "checking", exc))
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


def compile_policy(
    rules: Path,
    mode: policy.GlobalMode | None,
    previous: Engine | None = None,
    rbac: base.RbacView | None = None,
) -> Engine:
    """Load and compile the policy, logging each exemption's status; PolicyError if it is unusable.

    The one way a serving guard gets an engine, at start-up and on every reload, so a reloaded
    policy reports lapsed exemptions exactly as a restart would. The runtime state of ``previous``
    (destructive-budget ledger, watched Approvals, the RBAC view) carries over: a reload never
    refills a budget. ``rbac`` is the RBAC view of a first engine (``serve --rbac-source``).
    """
    loaded = policy.load(rules, mode)
    judge = Engine(loaded, rbac=rbac) if previous is None else previous.successor(loaded)
    for level, line in judge.exemption_status():
        log.log(logging.WARNING if level == "warning" else logging.INFO, "exemption %s", line)
    return judge
