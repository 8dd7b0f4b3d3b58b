"""Reviewed exceptions to a guard: who may do what, where, why, and until when.

An exemption lives in the policy (``exemptions:``), never on the object being judged: a label or an
annotation is written by whoever writes the object, which is exactly the agent we are guarding
against. Every field that selects requests is an *exact* match (no wildcards, no prefixes), so an
exemption can only ever cover what a reviewer read. An exemption past its ``expires`` date stops
applying on its own and is reported, so "temporary" stays temporary.

The engine asks ``Index.lookup`` only after a guard has produced findings, so exemptions cost nothing
on the clean path. Time is passed in (``today``), never read here, to keep evaluation pure.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pydantic

from webhook import attributes, schema

NAMESPACES = "namespaces"


class Spec(schema.PolicyModel):
    """One ``exemptions:`` entry as written in the policy YAML."""

    guard: str = pydantic.Field(min_length=1)
    username: str | None = pydantic.Field(default=None, min_length=1)
    service_account: str | None = None  # "namespace/name", exact
    namespace: str  # required; "" for cluster-scoped objects (a Namespace's own name for a Namespace)
    name: str | None = pydantic.Field(default=None, min_length=1)
    reason: str
    expires: datetime.date | None = None

    @pydantic.field_validator("service_account")
    @classmethod
    def _namespace_slash_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if attributes.split_namespace_name(value) is None or "*" in value:
            raise ValueError(f"{value!r} must be an exact 'namespace/name' (no wildcards)")
        return value

    @pydantic.field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a reason is required: say why this exception is safe and who approved it")
        return value.strip()

    @pydantic.field_validator("expires", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        # YAML reads 2026-12-31 as a date; a timestamp would silently truncate, so refuse it.
        if isinstance(value, datetime.datetime):
            raise ValueError("expires is a date (YYYY-MM-DD); it lapses at the end of that day, UTC")
        return value

    @pydantic.model_validator(mode="after")
    def _one_identity(self) -> Spec:
        if (self.username is None) == (self.service_account is None):
            raise ValueError("set exactly one of username or serviceAccount (namespace/name)")
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class Exemption:
    """A validated exemption, with where it came from (``ref``) for logs and reports."""

    guard: str
    username: str
    namespace: str
    name: str | None
    reason: str
    expires: datetime.date | None
    ref: str  # "policy.yaml#exemptions[0]"

    @classmethod
    def from_spec(cls, spec: Spec, ref: str) -> Exemption:
        username = spec.username
        if spec.service_account is not None:
            namespace, _, name = spec.service_account.partition("/")
            username = f"{attributes.SA_PREFIX}{namespace}:{name}"
        assert username is not None  # guaranteed by Spec._one_identity
        return cls(spec.guard, username, spec.namespace, spec.name, spec.reason, spec.expires, ref)

    def expired(self, today: datetime.date) -> bool:
        """True from the day after ``expires`` on (the exemption covers its whole last day, UTC)."""
        return self.expires is not None and today > self.expires

    def covers(self, username: str, namespace: str, name: str) -> bool:
        return (
            username == self.username
            and namespace == self.namespace
            and (self.name is None or name == self.name)
        )

    def describe(self) -> str:
        where = f"namespace {self.namespace!r}" if self.namespace else "cluster scope"
        what = f", name {self.name!r}" if self.name is not None else ""
        return f"{self.guard} for {self.username} in {where}{what}"

    def as_log(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ref": self.ref, "guard": self.guard, "reason": self.reason}
        if self.expires is not None:
            entry["expires"] = self.expires.isoformat()
        return entry


def scope(
    request: attributes.AdmissionRequest | attributes.AccessRequest,
) -> tuple[str, str]:
    """``(namespace, name)`` an exemption is matched against.

    The apiserver reports a Namespace's own name as the namespace of requests on it (except CREATE,
    whose URL names no namespace); we normalise so ``namespace: preview-1`` always covers Namespace
    ``preview-1``, however the request reached us.
    """
    if isinstance(request, attributes.AdmissionRequest):
        group, resource = request.resource.group, request.resource.resource
    else:
        group, resource = request.group, request.resource
    if group == "" and resource == NAMESPACES and request.name:
        return request.name, request.name
    return request.namespace, request.name


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """What the exemptions say about one guard's findings on one request."""

    active: Exemption | None = None
    expired: tuple[Exemption, ...] = ()


NO_MATCH = Match()


class Index:
    """Exemptions grouped by guard id; ``lookup`` is a dict hit plus a short scan."""

    __slots__ = ("_by_guard", "all")

    def __init__(self, items: Iterable[Exemption]) -> None:
        self.all: tuple[Exemption, ...] = tuple(items)
        by_guard: dict[str, list[Exemption]] = {}
        for item in self.all:
            by_guard.setdefault(item.guard, []).append(item)
        self._by_guard = {guard: tuple(items) for guard, items in by_guard.items()}

    def __bool__(self) -> bool:
        return bool(self.all)

    def lookup(self, guard: str, username: str, namespace: str, name: str, today: datetime.date) -> Match:
        candidates = self._by_guard.get(guard)
        if not candidates:
            return NO_MATCH
        expired: list[Exemption] = []
        for item in candidates:
            if not item.covers(username, namespace, name):
                continue
            if not item.expired(today):
                return Match(active=item)
            expired.append(item)
        return Match(expired=tuple(expired)) if expired else NO_MATCH


def status_lines(
    items: Sequence[Exemption],
    today: datetime.date,
    is_agent: Callable[[attributes.UserInfo], bool] | None = None,
    by_group: bool = False,
    by_extra: bool = False,
) -> list[tuple[str, str]]:
    """``(level, text)`` per exemption for ``agent-guard policy`` and the start-up log.

    ``level`` is ``ok`` or ``warning``; warnings are exemptions that no longer (or never) apply.
    With ``is_agent``, an exemption naming someone the agent selector cannot match is flagged - only
    when the name alone decides it: a ServiceAccount's groups follow from its name, a user's do not
    (``by_group``/``by_extra``: the selector also matches groups / ``userInfo.extra``).
    """
    lines: list[tuple[str, str]] = []
    for item in items:
        head = f"{item.ref}: {item.describe()}"
        if item.expired(today):
            assert item.expires is not None
            lines.append(
                (
                    "warning",
                    f"{head}: EXPIRED on {item.expires.isoformat()}, no longer applies "
                    f"(renew or remove it; reason was: {item.reason})",
                )
            )
            continue
        user = attributes.authenticated_user(item.username)
        decidable = not by_extra and (user.service_account is not None or not by_group)
        if is_agent is not None and decidable and not is_agent(user):
            lines.append(("warning", f"{head}: {item.username} is not an agent identity; it never applies"))
            continue
        until = f"until {item.expires.isoformat()}" if item.expires else "no expiry"
        lines.append(("ok", f"{head}: active, {until} (reason: {item.reason})"))
    return lines
