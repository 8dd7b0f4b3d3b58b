"""Kubernetes audit events (``audit.k8s.io/v1``) -> the requests the guard would have judged.

Reading: JSON lines or a JSON ``EventList``, gzip or not, streamed. Each request counts once:
``ResponseComplete`` (or ``Panic``) wins, earlier stages of the same ``auditID`` are used only when no
later one exists. Building: ``objectRef`` + user + ``requestObject`` become an ``AccessRequest`` (what
the authorizer sees, for every request) and, for writes and connects, an ``AdmissionRequest``;
whatever the event cannot tell is appended to ``partial`` in plain words.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook import attributes, kinds
from webhook.tools import inputs

RBAC = "rbac.authorization.k8s.io"
FINAL_STAGES = ("ResponseComplete", "Panic")
OPERATIONS = {
    "create": "CREATE",
    "update": "UPDATE",
    "patch": "UPDATE",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}
# The apiserver exempts these from admission webhooks (the guard sees them only via /authorize).
NOT_ADMITTED = frozenset(
    {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
        ("admissionregistration.k8s.io", "mutatingadmissionpolicies"),
        ("admissionregistration.k8s.io", "mutatingadmissionpolicybindings"),
    }
)
_BOOL_OPTIONS = ("stdin", "stdout", "stderr", "tty")


@dataclass(slots=True)
class Stats:
    """What reading the audit logs found besides the requests (counted, shown in replay's summary)."""

    events: int = 0
    duplicates: int = 0  # earlier stages of a request already counted
    not_json: int = 0
    not_events: int = 0
    problems: list[str] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------------


def _events_in(name: str, stats: Stats) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(source, event)`` from JSON lines, or from a JSON ``EventList`` (pretty-printed or not)."""
    shown = inputs.display(name)
    first_bad: int | None = None
    # Files are streamed (audit logs are large); stdin is read once so it can be re-parsed whole.
    whole = inputs.read_text(name) if name == inputs.STDIN else None
    source_lines = whole.splitlines() if whole is not None else inputs.lines(name)
    for number, line in enumerate(source_lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if number == 1 and text.startswith("{"):
                yield from _event_list(name, whole)
                return
            stats.not_json += 1
            first_bad = first_bad or number
            continue
        if isinstance(value, dict) and value.get("kind") == "EventList":
            for index, item in enumerate(value.get("items") or []):
                yield f"{shown}:{number}.items[{index}]", item
        else:
            yield f"{shown}:{number}", value
    if first_bad is not None:
        stats.problems.append(f"{shown}: line {first_bad}: not JSON ({stats.not_json} such line(s) skipped)")


def _event_list(name: str, whole: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    shown = inputs.display(name)
    try:
        value = json.loads(whole if whole is not None else inputs.read_text(name))
    except json.JSONDecodeError as exc:
        raise inputs.InputError(
            f"{shown}: neither JSON lines nor a JSON EventList (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(value, dict) or not isinstance(value.get("items"), list):
        raise inputs.InputError(f"{shown}: a JSON document that is not an audit EventList")
    for index, item in enumerate(value["items"]):
        yield f"{shown}:items[{index}]", item


def _is_event(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("kind", "Event") == "Event"
        and str(value.get("apiVersion", "audit.k8s.io/")).startswith("audit.k8s.io/")
        and isinstance(value.get("verb"), str)
        and isinstance(value.get("user"), dict)
    )


def unique_events(names: Sequence[str], stats: Stats) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each request once: its final stage, else (at the end) its latest earlier stage."""
    done: set[str] = set()
    pending: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in names:
        for source, event in _events_in(name, stats):
            if not _is_event(event):
                stats.not_events += 1
                continue
            audit_id = str(event.get("auditID") or source)
            if audit_id in done:
                stats.duplicates += 1
                continue
            if event.get("stage") in FINAL_STAGES:
                done.add(audit_id)
                if pending.pop(audit_id, None) is not None:
                    stats.duplicates += 1
                stats.events += 1
                yield source, event
            else:
                if audit_id in pending:
                    stats.duplicates += 1
                pending[audit_id] = (source, event)
    for source, event in pending.values():
        stats.events += 1
        yield source, event


# --- turning an event into requests ---------------------------------------------------------------


def user_info(raw: Mapping[str, Any]) -> attributes.UserInfo:
    extra = raw.get("extra") or {}
    return attributes.UserInfo(
        username=str(raw.get("username", "")),
        groups=tuple(raw.get("groups") or ()),
        uid=str(raw.get("uid", "")),
        extra={str(k): tuple(map(str, v)) if isinstance(v, list) else (str(v),) for k, v in extra.items()}
        if isinstance(extra, dict)
        else {},
    )


def _connect_options(kind: str, uri: str) -> dict[str, Any]:
    """PodExecOptions & co. rebuilt from the query string, as the apiserver hands them to admission."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    options: dict[str, Any] = {"apiVersion": "v1", "kind": kind}
    if "command" in query:
        options["command"] = query["command"]
    if "container" in query:
        options["container"] = query["container"][0]
    if "ports" in query:
        options["ports"] = [int(p) for p in query["ports"] if p.isdigit()]
    if "path" in query:
        options["path"] = query["path"][0]
    for key in _BOOL_OPTIONS:
        if key in query:
            options[key] = query[key][0].lower() in ("true", "1")
    return options


def _body(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def admission_request(
    event: Mapping[str, Any], ref: Mapping[str, Any], user: attributes.UserInfo, partial: list[str]
) -> attributes.AdmissionRequest | None:
    verb = event["verb"]
    group, resource = str(ref.get("apiGroup", "")), str(ref.get("resource", ""))
    sub = str(ref.get("subresource", ""))
    if (group, resource) in NOT_ADMITTED:
        return None
    connect = sub in kinds.CONNECT_SUBRESOURCES and verb in ("create", "get")
    if not connect and verb not in OPERATIONS:
        return None
    operation = "CONNECT" if connect else OPERATIONS[verb]
    level = event.get("level", "")
    request_body = event.get("requestObject")
    obj: dict[str, Any] | None = None
    old: dict[str, Any] | None = None
    kind = kinds.kind_of(group, resource, sub)
    if connect:  # CONNECT carries its options (PodExecOptions & co.) as the object
        obj = _connect_options(kind or "ConnectOptions", str(event.get("requestURI", "")))
    elif operation in ("CREATE", "UPDATE"):
        if isinstance(request_body, str):
            partial.append(f"request body not logged ({request_body})")
        elif request_body is None:
            partial.append(
                f"no request body in the event (level {level or 'unknown'}): judged on its reference"
            )
        elif verb == "patch":
            obj = _body(request_body)
            partial.append(
                "patch: the event holds the patch, not the patched object"
                + ("" if obj is not None else " (a JSON patch cannot be judged)")
            )
        else:
            obj = _body(request_body)
        if operation == "UPDATE" and obj is not None:
            partial.append("no old object in the audit log: checks comparing old and new see none")
        if obj is not None and not kind:
            kind = str(obj.get("kind", ""))
    else:  # DELETE
        response = _body(event.get("responseObject"))
        if response is not None and response.get("kind") not in (None, "Status"):
            old = response
        else:
            old = {
                "apiVersion": "/".join(p for p in (group, str(ref.get("apiVersion", "v1"))) if p),
                "kind": kind,
                "metadata": {"name": ref.get("name", ""), "namespace": ref.get("namespace", "")},
            }
            partial.append("the deleted object is not in the event: judged on its name")
        if verb == "deletecollection":
            partial.append("deletecollection: judged once; the apiserver asks admission once per object")
    return attributes.AdmissionRequest(
        uid=str(event.get("auditID", "")),
        operation=operation,
        resource=attributes.GroupVersionResource(group, str(ref.get("apiVersion", "")), resource),
        kind=kind,
        user=user,
        sub_resource=sub,
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        object=obj,
        old_object=old,
    )


def access_request(
    event: Mapping[str, Any], ref: Mapping[str, Any] | None, user: attributes.UserInfo
) -> attributes.AccessRequest:
    verb = str(event["verb"])
    if ref is None:
        path = urllib.parse.urlsplit(str(event.get("requestURI", ""))).path or "/"
        return attributes.AccessRequest(user=user, verb=verb, path=path)
    name = str(ref.get("name", ""))
    if verb == "create" and not ref.get("subresource"):
        name = ""  # a create is authorized on the collection; the audit log fills the name in later
    return attributes.AccessRequest(
        user=user,
        verb=verb,
        group=str(ref.get("apiGroup", "")),
        version=str(ref.get("apiVersion", "")),
        resource=str(ref.get("resource", "")),
        sub_resource=str(ref.get("subresource", "")),
        namespace=str(ref.get("namespace", "")),
        name=name,
    )


def impersonation_checks(
    caller: attributes.UserInfo, target: Mapping[str, Any]
) -> Iterator[attributes.AccessRequest]:
    """The ``impersonate`` checks the apiserver makes for ``caller`` before the request proper."""
    username = str(target.get("username", ""))
    account = attributes.UserInfo(username).service_account
    if account is not None:
        yield attributes.AccessRequest(
            caller, "impersonate", resource="serviceaccounts", namespace=account[0], name=account[1]
        )
    elif username:
        yield attributes.AccessRequest(caller, "impersonate", resource="users", name=username)
    for group in target.get("groups") or ():
        if (
            account is not None and group.startswith("system:serviceaccounts")
        ) or group == "system:authenticated":
            continue  # added by the apiserver itself, not asked for
        yield attributes.AccessRequest(caller, "impersonate", resource="groups", name=str(group))
    uid = target.get("uid")
    if uid:
        yield attributes.AccessRequest(
            caller, "impersonate", group="authentication.k8s.io", resource="uids", name=str(uid)
        )
    for key in target.get("extra") or {}:
        yield attributes.AccessRequest(
            caller, "impersonate", group="authentication.k8s.io", resource="userextras", sub_resource=str(key)
        )


def rbac_checks(
    event: Mapping[str, Any], ref: Mapping[str, Any], user: attributes.UserInfo
) -> Iterator[attributes.AccessRequest]:
    """``escalate`` / ``bind``: what RBAC's own storage asks the authorizer on role and binding writes."""
    if ref.get("apiGroup") != RBAC or event["verb"] not in ("create", "update", "patch"):
        return
    resource, namespace = str(ref.get("resource", "")), str(ref.get("namespace", ""))
    if resource in ("roles", "clusterroles"):
        yield attributes.AccessRequest(
            user,
            "escalate",
            group=RBAC,
            resource=resource,
            namespace=namespace,
            name=str(ref.get("name", "")),
        )
    elif resource in ("rolebindings", "clusterrolebindings"):
        body = _body(event.get("requestObject")) or {}
        role_ref = body.get("roleRef")
        if isinstance(role_ref, dict) and role_ref.get("name"):
            cluster = role_ref.get("kind") == "ClusterRole"
            yield attributes.AccessRequest(
                user,
                "bind",
                group=RBAC,
                resource="clusterroles" if cluster else "roles",
                namespace="" if cluster else namespace,
                name=str(role_ref["name"]),
            )


def where(namespace: str, name: str) -> str:
    """``ns/name``, ``name`` or ``ns``; a Namespace (whose namespace is its own name) shows once."""
    if namespace == name:
        return name
    return "/".join(p for p in (namespace, name) if p)


def describe(verb: str, resource_path: str, namespace: str, name: str) -> str:
    return " ".join(p for p in (verb, resource_path, where(namespace, name)) if p)


def describe_access(request: attributes.AccessRequest) -> str:
    if not request.is_resource_request:
        return f"{request.verb} {request.path}"
    return describe(request.verb, request.resource_path, request.namespace, request.name)
