"""Wire envelopes in and out: ``AdmissionReview`` (admission.k8s.io/v1) and ``SubjectAccessReview``
(authorization.k8s.io/v1 and v1beta1).

The body is parsed exactly once (pydantic-core's JSON parser) into a small envelope model; the
Kubernetes objects inside stay plain dicts and are handed to the guards untouched. Anything that is
not a well-formed review raises ``BadReview`` with a message naming the field, which the app turns
into HTTP 400 - a policy violation, by contrast, is a normal 200 response with ``allowed: false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
import pydantic
from pydantic import alias_generators

from webhook import attributes, engine

ADMISSION_API_VERSION = "admission.k8s.io/v1"
MAX_WARNING = 120  # the apiserver truncates long warnings; keep each one short


class BadReview(ValueError):
    """The body is not a usable review; the message names the problem."""


class _Envelope(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="ignore", alias_generator=alias_generators.to_camel, populate_by_name=True
    )


class _UserInfo(_Envelope):
    username: str = ""
    uid: str = ""
    groups: list[str] | None = None
    extra: dict[str, list[str]] | None = None


class _GroupVersionKind(_Envelope):
    group: str = ""
    version: str = ""
    kind: str


class _GroupVersionResource(_Envelope):
    group: str = ""
    version: str = ""
    resource: str = pydantic.Field(min_length=1)


class _AdmissionRequest(_Envelope):
    uid: str = pydantic.Field(min_length=1)
    kind: _GroupVersionKind
    resource: _GroupVersionResource
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: _UserInfo
    object: Any = None
    old_object: Any = None
    options: Any = None
    dry_run: bool | None = None


class _AdmissionReview(_Envelope):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: _AdmissionRequest


M = TypeVar("M", bound=pydantic.BaseModel)


def validated(model: type[M], body: bytes, expected: str) -> M:
    """Parse once (orjson, the fastest parser here) and validate only the envelope.

    Kubernetes objects inside stay the plain dicts orjson made: the envelope models type them
    ``Any``, so pydantic passes them through without copying.
    """
    if not body:
        raise BadReview(f"empty body: expected {expected}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise BadReview(describe(exc)) from None


def describe(error: pydantic.ValidationError) -> str:
    """A one-line, field-naming summary of a validation error (no input values echoed)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        if item["type"] == "json_invalid":
            return f"body is not valid JSON: {item['msg'].removeprefix('Invalid JSON: ')}"
        where = ".".join(str(p) for p in item["loc"]) or "(body)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else "")


def _mapping(value: Any, field: str) -> attributes.Object | None:
    if value is None or isinstance(value, dict):
        return value
    raise BadReview(f"request.{field}: expected a JSON object or null")


def user_info(raw: _UserInfo) -> attributes.UserInfo:
    return attributes.UserInfo(
        username=raw.username, groups=tuple(raw.groups or ()), uid=raw.uid, extra=raw.extra or {}
    )


def parse_admission(body: bytes) -> attributes.AdmissionRequest:
    """Bytes of an AdmissionReview -> the request the engine judges; BadReview if malformed."""
    review = validated(_AdmissionReview, body, "an AdmissionReview (admission.k8s.io/v1) JSON object")
    request = review.request
    return attributes.AdmissionRequest(
        uid=request.uid,
        operation=request.operation,
        resource=attributes.GroupVersionResource(
            request.resource.group, request.resource.version, request.resource.resource
        ),
        kind=request.kind.kind,
        user=user_info(request.user_info),
        sub_resource=request.sub_resource,
        namespace=request.namespace,
        name=request.name,
        object=_mapping(request.object, "object"),
        old_object=_mapping(request.old_object, "oldObject"),
        options=_mapping(request.options, "options"),
        dry_run=bool(request.dry_run),
    )


ELLIPSIS = "…"
# Where the "why" starts in a guard message ("<what>, which <why>; <advice>", "<what> is not allowed
# for agents: <why>; <advice>"): a warning that must be short keeps the what and the advice.
WHY_STARTS = (", which ", " is not allowed for agents", " are not allowed for agents", " because ")
MIN_WHAT = 24  # characters of the "what" kept even when the advice is long


def _clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut at a word boundary and marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + ELLIPSIS


def warning_text(finding: engine.Finding) -> str:
    """A dry-run finding as a client warning: ``[guard] would deny: <what>; <advice>``.

    kubectl shows warnings to the agent and its operator, and Kubernetes asks webhooks to keep each
    under 120 characters. Guard messages run ``<what>[, which <why>]; <advice>`` and are longer, so
    a long one keeps what would be denied and what to do instead, and drops the why first (the
    decision log has the whole message). Words are never cut in half.
    """
    prefix = f"[{finding.guard}] would deny: "
    body = finding.message.removeprefix(f"[{finding.guard}] ")
    budget = MAX_WARNING - len(prefix)
    if len(body) <= budget or "; " not in body:
        return prefix + _clip(body, budget)
    head, advice = body.rsplit("; ", 1)
    if advice.startswith("agents may") and ": " in advice:  # "agents may not X: <advice>"
        advice = advice.split(": ", 1)[1]
    what = min((head.split(marker, 1)[0] for marker in WHY_STARTS), key=len)
    budget -= len("; ")
    advice = _clip(advice, max(budget - min(len(what), MIN_WHAT), MIN_WHAT))
    return f"{prefix}{_clip(what, budget - len(advice))}; {advice}"


def admission_response(uid: str, verdict: engine.Verdict) -> dict[str, Any]:
    """The AdmissionReview answer for a verdict (uid echoed, 403 + one line per denial)."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": "\n".join(f.message for f in verdict.denials),
        }
    if verdict.warnings:
        response["warnings"] = [warning_text(f) for f in verdict.warnings]
    if verdict.agent:
        annotations = {"decision": verdict.decision, "guards": ",".join(verdict.guards)}
        if verdict.exempted:  # the audit log must show what an exemption let through
            annotations["exempted"] = ",".join(dict.fromkeys(e.exemption.ref for e in verdict.exempted))
        response["auditAnnotations"] = annotations
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


# --- SubjectAccessReview (the authorization webhook) -------------------------------------------

AUTHORIZATION_V1 = "authorization.k8s.io/v1"
AUTHORIZATION_V1BETA1 = "authorization.k8s.io/v1beta1"
# The name of the groups field in each version (k8s.io/api/authorization/*/types.go): v1beta1 kept
# the historical JSON name ``group`` for a list of groups.
_GROUPS_FIELD = {AUTHORIZATION_V1: "groups", AUTHORIZATION_V1BETA1: "group"}


class _ResourceAttributes(_Envelope):
    namespace: str = ""
    # The apiserver maps HTTP methods it has no verb for (OPTIONS, PROPFIND, … on a proxy path) to
    # an empty verb and omits it; refusing that review made the apiserver answer HTTP 500 without a
    # reason. Judged as an empty verb, the guards that deny any verb (proxy) give their reason.
    verb: str = ""
    group: str = ""
    version: str = ""
    resource: str = pydantic.Field(min_length=1)
    subresource: str = ""
    name: str = ""


class _NonResourceAttributes(_Envelope):
    path: str = pydantic.Field(min_length=1)
    verb: str = pydantic.Field(min_length=1)


class _AccessSpec(_Envelope):
    resource_attributes: _ResourceAttributes | None = None
    non_resource_attributes: _NonResourceAttributes | None = None
    user: str = ""
    uid: str = ""
    groups: list[str] | None = None  # authorization.k8s.io/v1
    group: list[str] | None = None  # authorization.k8s.io/v1beta1
    extra: dict[str, list[str] | None] | None = None  # Go marshals a nil ExtraValue as null


class _SubjectAccessReview(_Envelope):
    api_version: Literal["authorization.k8s.io/v1", "authorization.k8s.io/v1beta1"]
    kind: Literal["SubjectAccessReview"]
    spec: _AccessSpec


@dataclass(frozen=True, slots=True)
class AccessReview:
    """A parsed SubjectAccessReview: the request to judge and the version to answer in."""

    api_version: str
    request: attributes.AccessRequest


def parse_access(body: bytes) -> AccessReview:
    """Bytes of a SubjectAccessReview (v1 or v1beta1) -> what the engine judges; BadReview if malformed.

    The groups field is read under the name its version gives it, and the other version's name is an
    error rather than silently ignored: dropping an agent's groups would let a group-matched agent
    through, while a 400 makes the apiserver apply ``failurePolicy: Deny``.
    """
    review = validated(
        _SubjectAccessReview, body, "a SubjectAccessReview (authorization.k8s.io/v1 or v1beta1) JSON object"
    )
    spec = review.spec
    groups_field = _GROUPS_FIELD[review.api_version]
    for name, value in (("groups", spec.groups), ("group", spec.group)):
        if value is not None and name != groups_field:
            raise BadReview(
                f"spec.{name}: not a field of {review.api_version}, which names the list of groups "
                f"spec.{groups_field}"
            )
    resource, non_resource = spec.resource_attributes, spec.non_resource_attributes
    one_of = "exactly one of resourceAttributes and nonResourceAttributes must be set"
    if resource is not None and non_resource is not None:
        raise BadReview(f"spec: {one_of}, got both")
    user = attributes.UserInfo(
        username=spec.user,
        groups=tuple(spec.groups or spec.group or ()),
        uid=spec.uid,
        extra={key: tuple(values or ()) for key, values in (spec.extra or {}).items()},
    )
    if resource is not None:
        request = attributes.AccessRequest(
            user=user,
            verb=resource.verb,
            group=resource.group,
            version=resource.version,
            resource=resource.resource,
            sub_resource=resource.subresource,
            namespace=resource.namespace,
            name=resource.name,
        )
    elif non_resource is not None:
        request = attributes.AccessRequest(user=user, verb=non_resource.verb, path=non_resource.path)
    else:
        raise BadReview(f"spec: {one_of}, got neither")
    return AccessReview(api_version=review.api_version, request=request)


def access_response(api_version: str, verdict: engine.Verdict) -> dict[str, Any]:
    """The SubjectAccessReview answer: ``denied`` for enforced findings, otherwise "no opinion".

    ``allowed`` is always false: the guard only ever subtracts, RBAC (next in the chain) grants.
    ``allowed: false, denied: false`` lets the apiserver ask the next authorizer. Findings of guards
    that crashed are also named in ``evaluationError`` (informational; the apiserver only acts on
    ``allowed``/``denied``/``reason``).
    """
    status: dict[str, Any] = {"allowed": False, "denied": bool(verdict.denials)}
    if verdict.denials:
        status["reason"] = "; ".join(f.message for f in verdict.denials)
    failed = [f.guard for f in verdict.findings if f.error]
    if failed:
        status["evaluationError"] = (
            f"guard {', '.join(dict.fromkeys(failed))} failed on this request; see the guard's log"
        )
    return {"apiVersion": api_version, "kind": "SubjectAccessReview", "status": status}
