"""Wire envelopes in and out: ``AdmissionReview`` (admission.k8s.io/v1).

The body is parsed exactly once (pydantic-core's JSON parser) into a small envelope model; the
Kubernetes objects inside stay plain dicts and are handed to the guards untouched. Anything that is
not a well-formed review raises ``BadReview`` with a message naming the field, which the app turns
into HTTP 400 - a policy violation, by contrast, is a normal 200 response with ``allowed: false``.
"""

from __future__ import annotations

from typing import Any, Literal

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
    if not body:
        raise BadReview("empty body: expected an AdmissionReview (admission.k8s.io/v1) JSON object")
    try:
        review = _AdmissionReview.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise BadReview(describe(exc)) from None
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


def _short(text: str) -> str:
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 1] + "…"


def warning_text(finding: engine.Finding) -> str:
    """A dry-run finding as a client warning: ``[guard] would deny: ...``, under the size budget."""
    prefix = f"[{finding.guard}] "
    return _short(f"{prefix}would deny: {finding.message.removeprefix(prefix)}")


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


def fail_closed_response(uid: str, reason: str) -> dict[str, Any]:
    """Deny when the guard itself failed: only agents are routed here, so this never blocks humans."""
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"code": 403, "reason": "Forbidden", "message": f"[internal-error] {reason}"},
            "auditAnnotations": {"decision": "deny", "guards": "internal-error"},
        },
    }
