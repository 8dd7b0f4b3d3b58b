"""``agent-guard check``: judge manifests (or AdmissionReviews) offline, as an agent would send them.

Meant for CI and for operators tuning the policy: "if the MCP server applied this YAML, would the
guard let it through?". A manifest becomes the AdmissionRequest the apiserver would build for it
(resource from ``webhook.kinds``, namespace defaulted like ``kubectl``, the object as ``object`` or,
for ``--operation DELETE``, as ``oldObject``) and goes through the same ``Engine.admit`` as
``/validate``, exemptions included. An AdmissionReview file is judged as recorded (``--as``
replaces its user).

The identity defaults to the policy's first agent identity with any ``*`` replaced by ``agent``
(``mcp-system/*`` -> ``system:serviceaccount:mcp-system:agent``). Groups follow what the apiserver
gives an impersonated user: a ServiceAccount gets its ServiceAccount groups unless ``--group`` is
given, and everyone gets ``system:authenticated``.

Exit codes: 0 nothing would be denied, 1 something would be denied - dry-run findings included,
because the question is what the policy refuses once enforced - and 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from webhook import attributes, engine, kinds, policy, review
from webhook.tools import command, inputs, verdicts

SUFFIXES = (".yaml", ".yml", ".json")
OPERATIONS = ("CREATE", "UPDATE", "DELETE")
AUTHENTICATED = "system:authenticated"
PLACEHOLDER = "agent"


@dataclass(frozen=True, slots=True)
class Item:
    """One object to judge and where it came from."""

    source: str
    request: attributes.AdmissionRequest
    notes: tuple[str, ...] = ()


def make_user(
    username: str, groups: Sequence[str] = (), extra: Mapping[str, Sequence[str]] | None = None
) -> attributes.UserInfo:
    """The UserInfo the apiserver would build when impersonating ``username`` with ``groups``."""
    chosen = list(dict.fromkeys(groups))
    account = attributes.UserInfo(username).service_account
    if account is not None and not chosen:
        chosen = ["system:serviceaccounts", f"system:serviceaccounts:{account[0]}"]
    if AUTHENTICATED not in chosen:
        chosen.append(AUTHENTICATED)
    return attributes.UserInfo(username, tuple(chosen), extra=dict(extra or {}))


def default_user(selector: policy.AgentSelector) -> attributes.UserInfo:
    """A concrete identity the policy's first agent rule matches (``*`` -> ``agent``)."""
    if selector.service_accounts:
        namespace, _, name = selector.service_accounts[0].partition("/")
        namespace, name = namespace.replace("*", PLACEHOLDER), name.replace("*", PLACEHOLDER)
        return make_user(f"{attributes.SA_PREFIX}{namespace}:{name}")
    if selector.usernames:
        return make_user(selector.usernames[0])
    if selector.username_prefixes:
        return make_user(selector.username_prefixes[0] + PLACEHOLDER)
    if selector.groups:
        return make_user(PLACEHOLDER, [selector.groups[0]])
    first = selector.extra[0]
    return make_user(PLACEHOLDER, extra={first.key: [first.value]})


def _parse_extra(values: Sequence[str]) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for value in values:
        key, eq, item = value.partition("=")
        if not eq or not key:
            raise inputs.InputError(f"--extra {value!r}: expected KEY=VALUE")
        extra.setdefault(key, []).append(item)
    return extra


def _from_review(doc: Mapping[str, Any], source: str, user: attributes.UserInfo | None) -> Item:
    try:
        request = review.parse_admission(json.dumps(doc).encode())
    except review.BadReview as exc:
        raise inputs.InputError(f"{source}: not a usable AdmissionReview: {exc}") from None
    if user is None:
        return Item(source, request)
    return Item(
        source, replace(request, user=user), (f"judged as {user.username} (--as), not the review's user",)
    )


def _from_manifest(
    doc: Mapping[str, Any],
    source: str,
    *,
    user: attributes.UserInfo,
    operation: str,
    namespace: str,
    uid: str,
) -> Item:
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        raise inputs.InputError(f"{source}: not a Kubernetes object: apiVersion and kind are required")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise inputs.InputError(f"{source}: metadata must be a mapping")
    name = metadata.get("name") or ""
    if not isinstance(name, str) or (not name and not metadata.get("generateName")):
        raise inputs.InputError(f"{source}: {kind}: metadata.name (or generateName) is required")
    resolved = kinds.resolve(api_version, kind)
    notes = [resolved.note] if resolved.note else []
    obj: dict[str, Any] = dict(doc)
    if resolved.group == "" and resolved.resource == kinds.NAMESPACES:
        # The apiserver reports a Namespace's own name as the namespace, except on CREATE.
        request_namespace = "" if operation == "CREATE" else name
    elif resolved.namespaced is False:
        request_namespace = ""
    else:
        request_namespace = metadata.get("namespace") or (namespace if resolved.namespaced else "")
        if request_namespace and metadata.get("namespace") != request_namespace:
            # The apiserver fills the object's namespace from the request before admission.
            obj["metadata"] = {**metadata, "namespace": request_namespace}
    request = attributes.AdmissionRequest(
        uid=uid,
        operation=operation,
        resource=attributes.GroupVersionResource(resolved.group, resolved.version, resolved.resource),
        kind=kind,
        user=user,
        namespace=request_namespace,
        name=name,
        object=None if operation == "DELETE" else obj,
        old_object=obj if operation == "DELETE" else None,
    )
    if operation == "UPDATE":
        notes.append("UPDATE without the live object: checks that compare old and new see no old object")
    return Item(source, request, tuple(notes))


def collect(
    paths: Sequence[str],
    user: attributes.UserInfo,
    explicit_user: bool,
    operation: str = "CREATE",
    namespace: str = "default",
) -> list[Item]:
    """Every object in ``paths`` as an Item; all input problems at once in one InputError."""
    found, problems = inputs.objects(paths, SUFFIXES)
    items: list[Item] = []
    for source, doc in found:
        try:
            if not isinstance(doc, dict):
                raise inputs.InputError(f"{source}: expected a mapping, got {type(doc).__name__}")
            if doc.get("kind") == "AdmissionReview":
                items.append(_from_review(doc, source, user if explicit_user else None))
            else:
                uid = f"check-{len(items) + 1}"
                items.append(
                    _from_manifest(doc, source, user=user, operation=operation, namespace=namespace, uid=uid)
                )
        except inputs.InputError as exc:
            problems.append(str(exc))
    if problems:
        raise inputs.InputError("\n".join(problems))
    return items


def _where(request: attributes.AdmissionRequest) -> str:
    name = request.name or "(generated name)"
    if request.namespace and not (
        request.resource.resource == kinds.NAMESPACES and request.resource.group == ""
    ):
        return f"{request.namespace}/{name}"
    return name


def _result_json(item: Item, verdict: engine.Verdict) -> dict[str, Any]:
    request = item.request
    gvr = request.resource
    return {
        "source": item.source,
        "kind": request.kind,
        "namespace": request.namespace,
        "name": request.name,
        "operation": request.operation,
        "resource": request.resource_path,
        "group": gvr.group,
        "version": gvr.version,
        "user": request.user.username,
        **verdicts.as_json(verdict),
        "notes": list(item.notes),
    }


def render_text(results: Sequence[tuple[Item, engine.Verdict]], header: str) -> str:
    lines = [header, ""]
    for item, verdict in results:
        request = item.request
        label = verdicts.LABELS[verdict.decision]
        lines.append(f"{label:<10}  {request.kind} {_where(request)}  {request.operation}  ({item.source})")
        lines.extend(verdicts.as_text(verdict))
        lines.extend(f"    note: {note}" for note in item.notes)
    lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines)


def summary(results: Sequence[tuple[Item, engine.Verdict]]) -> dict[str, int]:
    counts = {"objects": len(results), "deny": 0, "would-deny": 0, "allow": 0}
    for _, verdict in results:
        counts[verdict.decision] += 1
    counts["exempted"] = sum(1 for _, v in results if v.exempted and not v.findings)
    return counts


def summary_line(results: Sequence[tuple[Item, engine.Verdict]]) -> str:
    counts = summary(results)
    exempted = counts["exempted"]
    return (
        f"{len(results)} object(s): {counts['deny']} denied, {counts['would-deny']} would be denied "
        f"(guards in dry-run), {counts['allow']} allowed"
        + (f" ({exempted} only thanks to an exemption)" if exempted else "")
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="manifests, AdmissionReviews, directories, - for stdin"
    )
    parser.add_argument(
        "--as", dest="as_user", metavar="USER", help="judge as this user (default: first agent identity)"
    )
    parser.add_argument(
        "--group", action="append", default=[], metavar="G", help="a group of --as (repeatable)"
    )
    parser.add_argument(
        "--extra", action="append", default=[], metavar="KEY=VALUE", help="userInfo.extra (repeatable)"
    )
    parser.add_argument(
        "--operation",
        default="CREATE",
        type=str.upper,
        choices=OPERATIONS,
        help="for manifests (default CREATE)",
    )
    parser.add_argument(
        "--namespace", default="default", help="for namespaced objects without one (default: default)"
    )
    command.add_rules(parser)
    parser.add_argument("--mode", choices=["enforce", "dry-run"], help="override the policy's modes")
    parser.add_argument("--output", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    loaded = command.load_policy(args, code=verdicts.EXIT_BAD_INPUT)
    judge = engine.Engine(loaded)
    extra = _parse_extra(args.extra)
    explicit = args.as_user is not None
    if explicit:
        user = make_user(args.as_user, args.group, extra)
        origin = "--as"
    else:
        if args.group or extra:
            raise inputs.InputError("--group/--extra need --as")
        user = default_user(loaded.agents)
        origin = "the policy's first agent identity; --as to change"
    items = collect(args.paths, user, explicit, args.operation, args.namespace)
    if not judge.is_agent(user):
        print(
            f"agent-guard check: note: {user.username} is not an agent in this policy, so nothing is judged",
            file=sys.stderr,
        )
    results = [(item, judge.admit(item.request)) for item in items]
    if args.output == "json":
        payload = {
            "user": {"username": user.username, "groups": list(user.groups)},
            "results": [_result_json(item, verdict) for item, verdict in results],
            "summary": summary(results),
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        groups = ", ".join(user.groups)
        print(render_text(results, f"as {user.username} [{groups}] ({origin})"))
    denied = any(verdicts.would_deny(verdict) for _, verdict in results)
    return verdicts.EXIT_WOULD_DENY if denied else verdicts.EXIT_CLEAN
