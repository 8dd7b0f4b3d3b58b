"""Human approval of one exact request: a one-shot, expiring exception a person grants at runtime.

Policy names which findings are approvable (``approvals:`` rules: a guard, optionally namespaces and
resources). When every enforced denial of an agent's request is approvable, the denial carries an
approval id and the exact ``agent-guard approve`` command a human runs. That command writes an
``Approval`` object (``agent-guard.io/v1alpha1``, in the guard's namespace) recording the approver,
the identity, operation, resource, namespace/name, expiry and reason. The guard watches Approvals
off the request path (``webhook.approvals_watch``) into a ``Store``; a retry by the same identity,
same operation on the same object, before expiry, is admitted once and audited with the approver
(as an exemption with ref ``approval/<id>``).

The id is a checksum of exactly what is approved (identity, operation, group/resource/subresource,
namespace, name), so the command a human runs and the request the agent retries must agree on every
field, and a typo in the command is refused before anything is written.

This module is pure: the store is state injected into the engine, like the budget ledger; time is
passed in. Agents can never write Approvals: they live in the guard's namespace, which
``guard-tamper`` closes to agents at admission and in ``/authorize``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import shlex
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from webhook import attributes, exemptions, schema

GROUP, VERSION, KIND, PLURAL = "agent-guard.io", "v1alpha1", "Approval", "approvals"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_TTL = "10m"


class Rule(schema.PolicyModel):
    """One ``approvals:`` entry: which findings a human may approve."""

    guard: str = pydantic.Field(min_length=1)
    namespaces: tuple[str, ...] = ()  # empty: every namespace ("" is cluster scope)
    resources: tuple[str, ...] = ()  # empty: every resource; "resource" or "resource/subresource"

    def covers(self, guard: str, namespace: str, resource: str) -> bool:
        return (
            guard == self.guard
            and (not self.namespaces or namespace in self.namespaces)
            and (not self.resources or resource in self.resources)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Exactly what an approval is for."""

    username: str
    operation: str
    group: str
    resource: str  # "resource" or "resource/subresource"
    namespace: str
    name: str

    @classmethod
    def of(cls, request: attributes.AdmissionRequest) -> Target:
        return cls(
            request.user.username,
            request.operation,
            request.resource.group,
            request.resource_path,
            request.namespace,
            request.name,
        )

    @property
    def id(self) -> str:
        """10 characters of base32 SHA-256 over every field (unambiguous: NUL-separated)."""
        fields = (self.username, self.operation, self.group, self.resource, self.namespace, self.name)
        digest = hashlib.sha256("\0".join(fields).encode()).digest()
        return base64.b32encode(digest).decode()[:10].lower()

    def command(self, ttl: str = DEFAULT_TTL) -> str:
        """The exact command a human runs to approve this request once."""
        parts = ["agent-guard", "approve", self.id, "--user", self.username, "--operation", self.operation]
        parts += ["--resource", f"{self.resource}.{self.group}" if self.group else self.resource]
        if self.namespace:
            parts += ["--namespace", self.namespace]
        if self.name:
            parts += ["--name", self.name]
        return shlex.join([*parts, "--ttl", ttl, "--reason", "..."])


def parse_resource(text: str) -> tuple[str, str]:
    """``"deployments.apps"`` / ``"deployments/scale.apps"`` / ``"configmaps"`` -> ``(group, resource)``."""
    path, dot, group = text.partition(".")
    return (group if dot else ""), path


@dataclasses.dataclass(frozen=True, slots=True)
class Approval:
    """An Approval object as the guard uses it."""

    id: str
    target: Target
    approver: str
    reason: str
    expires: datetime.datetime
    name: str  # the object's metadata.name
    consumed: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Approval:
        """Read an Approval object; ValueError (naming the field) if it is not usable."""
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise ValueError("spec: missing")

        def text(key: str, required: bool = True) -> str:
            value = spec.get(key, "")
            if not isinstance(value, str) or (required and not value):
                raise ValueError(f"spec.{key}: expected a non-empty string")
            return value

        target = Target(
            text("user"),
            text("operation"),
            text("group", required=False),
            text("resource"),
            text("namespace", required=False),
            text("name", required=False),
        )
        if text("id") != target.id:
            raise ValueError(f"spec.id: {spec.get('id')!r} does not match the approved request ({target.id})")
        try:
            expires = datetime.datetime.fromisoformat(text("expires").replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"spec.expires: {exc}") from exc
        if expires.tzinfo is None:
            raise ValueError("spec.expires: needs a time zone (e.g. 2026-12-01T17:00:00Z)")
        status = obj.get("status")
        consumed = isinstance(status, Mapping) and bool(status.get("consumedAt"))
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        assert isinstance(metadata, Mapping)
        return cls(
            target.id,
            target,
            text("approver"),
            text("reason"),
            expires,
            str(metadata.get("name", "")),
            consumed,
        )

    def exemption(self, guard: str) -> exemptions.Exemption:
        """How the engine records what this approval let through (decision log, audit annotations)."""
        return exemptions.Exemption(
            guard=guard,
            username=self.target.username,
            namespace=self.target.namespace,
            name=self.target.name or None,
            reason=f"approved by {self.approver}: {self.reason}",
            expires=None,
            ref=f"approval/{self.id} by {self.approver}",
        )


def manifest(
    target: Target, approver: str, reason: str, expires: datetime.datetime, namespace: str
) -> dict[str, Any]:
    """The Approval object ``agent-guard approve`` writes (or prints for ``kubectl apply``)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"generateName": f"{target.id}-", "namespace": namespace},
        "spec": {
            "id": target.id,
            "user": target.username,
            "operation": target.operation,
            "group": target.group,
            "resource": target.resource,
            "namespace": target.namespace,
            "name": target.name,
            "approver": approver,
            "reason": reason,
            "expires": expires.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


class Store:
    """The Approvals the guard knows, by id; written by the watcher thread, read by reviews.

    ``enabled`` is false until a watcher runs: only then does a denial offer an approval command.
    ``take`` consumes an approval in this process (admitted once here) and tells ``on_consumed`` so
    the watcher can mark it consumed in the cluster for the other replicas.
    """

    def __init__(self, on_consumed: Callable[[Approval], None] | None = None) -> None:
        self._by_id: dict[str, dict[str, Approval]] = {}  # id -> object name -> approval
        self._used: set[str] = set()  # object names consumed by this process
        self._lock = threading.Lock()
        self.enabled = False
        self.on_consumed = on_consumed
        self.offered_total = 0  # approvable denials that carried an approval command (metrics)
        self.used_total = 0  # retries admitted by an approval in this process (metrics)

    def put(self, approval: Approval) -> None:
        with self._lock:
            self._by_id.setdefault(approval.id, {})[approval.name] = approval

    def remove(self, name: str) -> None:
        with self._lock:
            for named in self._by_id.values():
                named.pop(name, None)
            self._by_id = {k: v for k, v in self._by_id.items() if v}
            self._used.discard(name)  # gone from the cluster: nothing left to remember

    def replace(self, approvals: list[Approval]) -> None:
        """The full list after a (re)list: anything not in it is gone."""
        fresh: dict[str, dict[str, Approval]] = {}
        for approval in approvals:
            fresh.setdefault(approval.id, {})[approval.name] = approval
        with self._lock:
            self._by_id = fresh
            self._used &= {name for named in fresh.values() for name in named}

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_id.values())

    def find(self, target: Target, now: datetime.datetime) -> Approval | None:
        """A usable approval for exactly ``target`` (not expired, not consumed anywhere)."""
        with self._lock:
            for approval in self._by_id.get(target.id, {}).values():
                if (
                    approval.target == target
                    and not approval.consumed
                    and approval.name not in self._used
                    and now < approval.expires
                ):
                    return approval
        return None

    def take(self, approval: Approval) -> bool:
        """Consume ``approval`` in this process; False if it was consumed meanwhile."""
        with self._lock:
            if approval.name in self._used:
                return False
            self._used.add(approval.name)
            self.used_total += 1
        if self.on_consumed is not None:
            self.on_consumed(approval)
        return True
