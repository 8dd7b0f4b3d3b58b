"""What the guards look at, independent of the wire format that carried it.

Admission and authorization reviews arrive in different envelopes (and in several API versions);
the guards should not care. ``webhook.review`` turns envelopes into these plain, immutable records,
and ``agent-guard check`` / ``replay`` build them from manifests and audit events. Kubernetes objects
stay plain mappings exactly as parsed: copying them into models would cost more than judging them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Object = Mapping[str, Any]

SA_PREFIX = "system:serviceaccount:"
AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNTS = "system:serviceaccounts"


def split_namespace_name(text: str) -> tuple[str, str] | None:
    """``"namespace/name"`` -> ``(namespace, name)``; None unless both parts are there and non-empty."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        return None
    return namespace, name


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The caller as the apiserver authenticated it (after impersonation)."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def service_account(self) -> tuple[str, str] | None:
        """``(namespace, name)`` when the caller is a ServiceAccount, else None."""
        if not self.username.startswith(SA_PREFIX):
            return None
        namespace, _, name = self.username[len(SA_PREFIX) :].partition(":")
        if not namespace or not name:
            return None
        return namespace, name


def authenticated_user(username: str) -> UserInfo:
    """``username`` with the groups the apiserver's authenticators give it: every authenticated caller is
    in ``system:authenticated``; a ServiceAccount's token adds ``system:serviceaccounts`` and
    ``system:serviceaccounts:<namespace>``. RBAC subjects, exemptions and the RBAC tools read identities
    this way."""
    account = UserInfo(username).service_account
    if account is None:
        return UserInfo(username, (AUTHENTICATED,))
    return UserInfo(username, (SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{account[0]}", AUTHENTICATED))


@dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One admission decision: an operation on one object (``admission.k8s.io`` request)."""

    uid: str
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    resource: GroupVersionResource
    kind: str
    user: UserInfo
    sub_resource: str = ""
    namespace: str = ""
    name: str = ""
    object: Object | None = None
    old_object: Object | None = None
    options: Object | None = None
    dry_run: bool = False

    @property
    def target(self) -> Object | None:
        """The object under review: the old object for DELETE, otherwise the new one."""
        if self.operation == "DELETE":
            return self.old_object if self.old_object is not None else self.object
        return self.object

    @property
    def resource_path(self) -> str:
        """``resource`` or ``resource/subresource``, the form RBAC and the docs use."""
        if self.sub_resource:
            return f"{self.resource.resource}/{self.sub_resource}"
        return self.resource.resource


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One authorization decision (``SubjectAccessReview``): a verb on a resource or a URL path."""

    user: UserInfo
    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    sub_resource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests (e.g. /healthz) carry a path instead of a resource

    @property
    def is_resource_request(self) -> bool:
        return not self.path

    @property
    def resource_path(self) -> str:
        if self.sub_resource:
            return f"{self.resource}/{self.sub_resource}"
        return self.resource
